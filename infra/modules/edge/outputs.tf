output "api_url" {
  description = "The operator API (COMO_SAGA_API for the operator commands)."
  value       = "https://${var.api_domain_name}"
}

output "dashboard_url" {
  value = local.dashboard_url
}

output "alb_dns_name" {
  description = "Point api_domain_name at this (CNAME or alias) when no Route 53 zone is given."
  value       = aws_lb.api.dns_name
}

output "alb_arn_suffix" {
  description = "The load balancer's CloudWatch dimension (LoadBalancer)."
  value       = aws_lb.api.arn_suffix
}

output "alb_security_group_id" {
  value = aws_security_group.alb.id
}

output "target_group_arn" {
  value = aws_lb_target_group.api.arn
}

output "target_group_arn_suffix" {
  description = "The target group's CloudWatch dimension (TargetGroup)."
  value       = aws_lb_target_group.api.arn_suffix
}

output "user_pool_id" {
  value = aws_cognito_user_pool.operators.id
}

output "issuer" {
  description = "The user pool's issuer: COMO_SAGA_JWT_ISSUER."
  value       = local.cognito_issuer
}

output "jwks_url" {
  description = "The user pool's key set: COMO_SAGA_JWKS."
  value       = "${local.cognito_issuer}/.well-known/jwks.json"
}

output "audience" {
  description = "The dashboard client's id, COMO_SAGA_JWT_AUDIENCE: the `aud` of its ID tokens and the `client_id` of its access tokens."
  value       = aws_cognito_user_pool_client.dashboard.id
}

output "signin_url" {
  description = "COMO_SAGA_DASHBOARD_SIGNIN_URL: the hosted UI, returning the token to the dashboard."
  value       = "https://${aws_cognito_user_pool_domain.hosted_ui.domain}.auth.${local.region}.amazoncognito.com/oauth2/authorize?response_type=token&client_id=${aws_cognito_user_pool_client.dashboard.id}&scope=openid+email+profile&redirect_uri=${urlencode(local.dashboard_url)}"
}

output "web_acl_name" {
  value = aws_wafv2_web_acl.api.name
}
