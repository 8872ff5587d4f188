# What an operator needs after an apply (docs/DEPLOY.md uses each).

output "api_url" {
  description = "The operator API: COMO_SAGA_API for the operator commands."
  value       = module.edge.api_url
}

output "dashboard_url" {
  value = module.edge.dashboard_url
}

output "alb_dns_name" {
  description = "Point api_domain_name here when no Route 53 zone was given."
  value       = module.edge.alb_dns_name
}

output "user_pool_id" {
  description = "Where operators are added (aws cognito-idp admin-create-user, admin-add-user-to-group)."
  value       = module.edge.user_pool_id
}

output "issuer" {
  description = "The user pool's issuer (the API's COMO_SAGA_JWT_ISSUER)."
  value       = module.edge.issuer
}

output "jwks_url" {
  description = "The user pool's key set (the API's COMO_SAGA_JWKS)."
  value       = module.edge.jwks_url
}

output "audience" {
  description = "The dashboard client's id (the API's COMO_SAGA_JWT_AUDIENCE)."
  value       = module.edge.audience
}

output "dashboard_signin_url" {
  description = "The hosted UI's sign-in page (the API's COMO_SAGA_DASHBOARD_SIGNIN_URL)."
  value       = module.edge.signin_url
}

output "ecr_repository_url" {
  description = "Where CI pushes the image."
  value       = module.compute.ecr_repository_url
}

output "deploy_role_arn" {
  description = "The role the deploy workflow assumes (repository variable AWS_DEPLOY_ROLE_ARN)."
  value       = module.compute.deploy_role_arn
}

output "cluster_name" {
  value = module.compute.cluster_name
}

output "queue_urls" {
  value = { for q, queue in module.data.queues : q => queue.url }
}

output "table" {
  value = module.data.table_name
}

output "bus" {
  value = module.data.bus_name
}

output "nat_public_ips" {
  description = "The addresses the workers' calls to Memberson and SevenRooms come from."
  value       = module.network.nat_public_ips
}

output "alarm_topic_arn" {
  value = module.observability.alarm_topic_arn
}

output "cloudwatch_dashboard" {
  value = module.observability.dashboard_name
}

output "private_subnet_ids" {
  description = "The tasks' subnets (for a one-off `aws ecs run-task`, e.g. the first token rotation)."
  value       = module.network.private_subnet_ids
}

output "tasks_security_group_id" {
  description = "The security group a one-off task runs in."
  value       = module.compute.tasks_security_group_id
}

output "keys_role_arn" {
  description = "The task role of `como-saga keys init` and `keys rotate` (the data keys' only writer): a one-off task of the orchestrator's task definition with this taskRoleArn in its overrides."
  value       = module.compute.keys_role_arn
}
