# One customer-managed key for the queues, the table, the secrets, the logs, the alarm topic and
# the image repository, rotated yearly. The account's IAM policies grant its use to the roles
# (compute module: each role through the service it calls, kms:ViaService); the key policy
# itself lets in the AWS services that encrypt with it on their own behalf: CloudWatch Logs for
# the deployment's log groups, EventBridge for the booking rule's deliveries into the
# encrypted request queue, and CloudWatch alarms for the encrypted alarm topic.
resource "aws_kms_key" "como" {
  description             = "${var.prefix}: queues, saga table, secrets, logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "como" {
  name          = "alias/${var.prefix}"
  target_key_id = aws_kms_key.como.key_id
}

locals {
  account = data.aws_caller_identity.current.account_id
  arn     = "arn:${data.aws_partition.current.partition}"
  region  = data.aws_region.current.name
}

data "aws_iam_policy_document" "kms" {
  # A key policy's "*" resource is the key itself.
  #checkov:skip=CKV_AWS_109:a key policy names the key it is attached to as "*"; the account's administrators keep control of the key
  #checkov:skip=CKV_AWS_111:a key policy names the key it is attached to as "*"
  #checkov:skip=CKV_AWS_356:a key policy names the key it is attached to as "*"
  statement {
    sid       = "account-administers-the-key"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["${local.arn}:iam::${local.account}:root"]
    }
  }
  statement {
    sid       = "cloudwatch-logs-encrypt-the-deployments-logs"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = [for p in var.log_group_patterns : "${local.arn}:logs:${local.region}:${local.account}:log-group:${p}"]
    }
  }
  # The booking rule delivers into the request queue, which this key encrypts.
  statement {
    sid       = "eventbridge-delivers-booking-requests"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = ["*"]
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
  # Alarms publish to the alarm topic, which this key encrypts.
  statement {
    sid       = "cloudwatch-alarms-publish-to-the-alarm-topic"
    actions   = ["kms:GenerateDataKey*", "kms:Decrypt"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
  }
}
