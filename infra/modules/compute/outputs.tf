output "cluster_name" {
  value = aws_ecs_cluster.como.name
}

output "cluster_arn" {
  value = aws_ecs_cluster.como.arn
}

output "service_names" {
  description = "Each service's name by role."
  value       = { for role, service in aws_ecs_service.role : role => service.name }
}

output "ecr_repository_url" {
  description = "Where CI pushes the image."
  value       = aws_ecr_repository.como.repository_url
}

output "deploy_role_arn" {
  description = "The role the deploy workflow assumes (the repository variable AWS_DEPLOY_ROLE_ARN)."
  value       = aws_iam_role.deploy.arn
}

output "tasks_security_group_id" {
  description = "The orchestrator's and workers' security group (also the rotation task's)."
  value       = aws_security_group.tasks.id
}

output "heartbeat" {
  description = "The services' heartbeat metric (ecs.tf, local.heartbeat): its namespace and name, the beats a task sends a minute, and each service's floor by its Service dimension (the role)."
  value = {
    namespace        = local.heartbeat.namespace
    metric           = local.heartbeat.metric
    beats_per_minute = local.heartbeat.beats_per_minute
    floor            = { for role in keys(local.services) : role => var.min_tasks[role] }
  }
}

output "keys_role_arn" {
  description = "The task role that writes the data keys: `keys init` and `keys rotate` run under it as a one-off task of the orchestrator's task definition (aws ecs run-task --overrides taskRoleArn)."
  value       = aws_iam_role.task["keys"].arn
}
