# The secrets, without values: Terraform state never holds a credential. Set the credentials
# once (`aws secretsmanager put-secret-value`, JSON as `como-saga infra bootstrap` writes
# them; docs/DEPLOY.md); the Memberson token is minted by `como-saga rotate-tokens`.
resource "aws_secretsmanager_secret" "como" {
  #checkov:skip=CKV2_AWS_57:the Memberson token is rotated by the scheduled rotate-tokens task (compute module), in Secrets Manager's four steps but without a rotation Lambda; the service credentials are issued and rotated by Memberson and SevenRooms
  for_each                = local.secret
  name                    = each.value
  description             = "como-saga ${each.key}"
  kms_key_id              = aws_kms_key.como.arn
  recovery_window_in_days = 30
}
