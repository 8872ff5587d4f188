# Standard queues (docs/aws.md says why not FIFO), each with its dead-letter queue after
# var.max_receives receives; SQS-managed server-side encryption, as `infra bootstrap` sets.
resource "aws_sqs_queue" "dlq" {
  for_each                  = local.dlq
  name                      = each.value
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = true
}

resource "aws_sqs_queue" "main" {
  for_each                   = local.queue
  name                       = each.value
  message_retention_seconds  = 1209600
  visibility_timeout_seconds = 30
  receive_wait_time_seconds  = 20
  sqs_managed_sse_enabled    = true
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
