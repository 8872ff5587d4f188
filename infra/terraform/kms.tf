# One customer-managed key for the table, the secrets and the logs, rotated yearly.
resource "aws_kms_key" "como" {
  description             = "${var.prefix}: saga table, secrets, logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "como" {
  name          = "alias/${var.prefix}"
  target_key_id = aws_kms_key.como.key_id
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
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
  statement {
    sid       = "cloudwatch-logs-encrypt-the-services-logs"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${data.aws_region.current.name}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${data.aws_partition.current.partition}:logs:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:log-group:/ecs/${var.prefix}*"]
    }
  }
}
