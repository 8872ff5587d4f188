# The secrets, without values: Terraform state never holds a credential or a key. Set the
# credentials once (`aws secretsmanager put-secret-value`, JSON as `como-saga infra bootstrap`
# writes them; docs/DEPLOY.md); the Memberson token is minted by `como-saga rotate-tokens`;
# the data keys (`<prefix>/data-keys`, the keyring that seals the guests' name, phone and
# e-mail) are written once by `como-saga keys init` (the deploy workflow runs it before the
# services roll) and rotated by `como-saga keys rotate`. No aws_secretsmanager_secret_version
# here, ever: a value in Terraform would be a value in its state.
resource "aws_secretsmanager_secret" "como" {
  #checkov:skip=CKV2_AWS_57:the Memberson token is rotated by the scheduled rotate-tokens task (compute module) and the data keys by the operator's `como-saga keys rotate`, both in Secrets Manager's four steps but without a rotation Lambda; the service credentials are issued and rotated by Memberson and SevenRooms
  for_each    = local.secret
  name        = each.value
  description = "como-saga ${each.key}"
  kms_key_id  = aws_kms_key.como.arn
  # 30 days (the longest) to undo a deletion of any of them, and for the data keys it matters
  # most: losing data-keys loses every sealed contact (each saga's guest details, in the table
  # and in flight, can no longer be opened; no backup of the table brings them back).
  recovery_window_in_days = 30
}
