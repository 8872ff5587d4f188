# Who may use the operator API and the dashboard: a Cognito user pool whose groups are the API's
# roles (viewer, operator, submitter; they reach the API as `cognito:groups`), and the hosted UI
# as the dashboard's sign-in page. Nothing here is built by como-saga: the dashboard only links
# to the hosted UI (COMO_SAGA_DASHBOARD_SIGNIN_URL, `signin_url` below) and reads the token that
# Cognito hands back in the URL's fragment; the API checks it against the pool's key set. The
# compute module passes `jwks_url`, `issuer` and `audience` below to the API's tasks as
# COMO_SAGA_JWKS, COMO_SAGA_JWT_ISSUER and COMO_SAGA_JWT_AUDIENCE, so that the API accepts the
# tokens of this pool's dashboard client and no other.

locals {
  dashboard_url = "https://${var.api_domain_name}/dashboard/"
  region        = data.aws_region.current.name
}

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
  # The feature plan (var.user_pool_tier; docs/DEPLOY.md weighs them). Lite has all this pool
  # uses: administrator-created users, groups, TOTP MFA for everyone, the password policy, the
  # classic hosted UI and the implicit grant. Threat protection (compromised credentials,
  # adaptive authentication) needs Plus, and is enforced when the plan is Plus.
  user_pool_tier = var.user_pool_tier
  dynamic "user_pool_add_ons" {
    for_each = var.user_pool_tier == "PLUS" ? ["ENFORCED"] : []
    content {
      advanced_security_mode = user_pool_add_ons.value
    }
  }
  deletion_protection = var.deletion_protection ? "ACTIVE" : "INACTIVE"
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
  callback_urls                        = [local.dashboard_url]
  logout_urls                          = [local.dashboard_url]
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
  cognito_issuer = "https://cognito-idp.${local.region}.amazonaws.com/${aws_cognito_user_pool.operators.id}"
}
