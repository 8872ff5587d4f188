# Standard queues (docs/aws.md says why not FIFO), each with its dead-letter queue after
# var.max_receives receives, all encrypted with the deployment's key. (`infra bootstrap`, for
# the local server, uses SQS-managed encryption instead: moto has no KMS to speak of.) SQS
# reuses a data key for an hour, so KMS sees a few calls an hour per queue and caller, not one
# per message.
locals {
  kms_data_key_reuse_seconds = 3600
}

resource "aws_sqs_queue" "dlq" {
  for_each                          = local.dlq
  name                              = each.value
  message_retention_seconds         = 1209600
  kms_master_key_id                 = aws_kms_key.como.arn
  kms_data_key_reuse_period_seconds = local.kms_data_key_reuse_seconds
}

resource "aws_sqs_queue" "main" {
  for_each                          = local.queue
  name                              = each.value
  message_retention_seconds         = 1209600
  visibility_timeout_seconds        = 30
  receive_wait_time_seconds         = 20
  kms_master_key_id                 = aws_kms_key.como.arn
  kms_data_key_reuse_period_seconds = local.kms_data_key_reuse_seconds
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq[each.key].arn
    maxReceiveCount     = var.max_receives
  })
}

# Each dead-letter queue takes messages from its own queue only.
resource "aws_sqs_queue_redrive_allow_policy" "dlq" {
  for_each  = local.dlq
  queue_url = aws_sqs_queue.dlq[each.key].id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.main[each.key].arn]
  })
}

# The booking rule may send to the request queue, and nothing else may from outside.
resource "aws_sqs_queue_policy" "requests" {
  queue_url = aws_sqs_queue.main["requests"].id
  policy    = data.aws_iam_policy_document.requests_from_rule.json
}

data "aws_iam_policy_document" "requests_from_rule" {
  statement {
    sid       = "booking-requests-from-eventbridge"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.main["requests"].arn]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_cloudwatch_event_rule.booking.arn]
    }
  }
}
