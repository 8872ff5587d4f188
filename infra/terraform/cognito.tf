# Who may use the operator API and the dashboard: a Cognito user pool whose groups are the API's
# roles (viewer, operator, submitter; they reach the API as `cognito:groups`), and the hosted UI
# as the dashboard's sign-in page. Nothing here is built by como-saga: the dashboard only links
# to the hosted UI (COMO_SAGA_DASHBOARD_SIGNIN_URL, the output below) and reads the token that
# Cognito hands back in the URL's fragment; the API checks it against the pool's key set
# (`como-saga api --jwks <api_jwks_url> --issuer <api_issuer> --audience <api_audience>`).

resource "aws_cognito_user_pool" "operators" {
  name = "${var.prefix}-operators"

  # People are added by an administrator; nobody signs themselves up.
  admin_create_user_config {
    allow_admin_create_user_only = true
  }
  mfa_configuration = "ON"
  software_token_mfa_configuration {
    enabled = true
  }
  password_policy {
    minimum_length                   = 14
    require_lowercase                = true
    require_uppercase                = true
    require_numbers                  = true
    require_symbols                  = true
    temporary_password_validity_days = 3
  }
  user_pool_add_ons {
    advanced_security_mode = "ENFORCED"
  }
  deletion_protection = "ACTIVE"
}

resource "aws_cognito_user_group" "roles" {
  for_each     = toset(["viewer", "operator", "submitter"])
  name         = each.key
  user_pool_id = aws_cognito_user_pool.operators.id
  description  = "como-saga API role ${each.key}"
}

resource "aws_cognito_user_pool_domain" "hosted_ui" {
  domain       = var.cognito_domain_prefix
  user_pool_id = aws_cognito_user_pool.operators.id
}

# The dashboard: a browser page without a secret, so the implicit grant returns the token to
# the dashboard's URL and nowhere else. Tokens live an hour; the live stream ends with them.
resource "aws_cognito_user_pool_client" "dashboard" {
  name                                 = "${var.prefix}-dashboard"
  user_pool_id                         = aws_cognito_user_pool.operators.id
  generate_secret                      = false
  allowed_oauth_flows_user_pool_client = true
  allowed_oauth_flows                  = ["implicit"]
  allowed_oauth_scopes                 = ["openid", "email", "profile"]
  supported_identity_providers         = ["COGNITO"]
  callback_urls                        = [var.dashboard_url]
  logout_urls                          = [var.dashboard_url]
  access_token_validity                = 60
  id_token_validity                    = 60
  token_validity_units {
    access_token = "minutes"
    id_token     = "minutes"
  }
  prevent_user_existence_errors = "ENABLED"
  explicit_auth_flows           = ["ALLOW_REFRESH_TOKEN_AUTH"]
}

locals {
  cognito_issuer = "https://cognito-idp.${var.region}.amazonaws.com/${aws_cognito_user_pool.operators.id}"
}

output "dashboard_signin_url" {
  description = "COMO_SAGA_DASHBOARD_SIGNIN_URL for `como-saga api`: the hosted UI, returning the token to the dashboard."
  value       = "https://${aws_cognito_user_pool_domain.hosted_ui.domain}.auth.${var.region}.amazoncognito.com/oauth2/authorize?response_type=token&client_id=${aws_cognito_user_pool_client.dashboard.id}&scope=openid+email+profile&redirect_uri=${urlencode(var.dashboard_url)}"
}

output "api_jwks_url" {
  value = "${local.cognito_issuer}/.well-known/jwks.json"
}

output "api_issuer" {
  value = local.cognito_issuer
}

output "api_audience" {
  description = "The dashboard client's id: the `aud` of its ID tokens and the `client_id` of its access tokens."
  value       = aws_cognito_user_pool_client.dashboard.id
}
