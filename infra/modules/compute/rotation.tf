# `como-saga rotate-tokens` on a schedule (EventBridge Scheduler): a task of its own, with the
# Memberson credentials and the token secret only. The schedule names the task definition's
# family, so it runs the latest revision: the one CI registered with the newest image.

resource "aws_ecs_task_definition" "rotate_tokens" {
  family                   = "${var.prefix}-rotate-tokens"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.task_size["rotate-tokens"].cpu
  memory                   = var.task_size["rotate-tokens"].memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task["rotate-tokens"].arn
  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }
  container_definitions = jsonencode([merge(local.container_defaults, {
    name        = "rotate-tokens"
    command     = ["rotate-tokens", "--test-member", var.rotation_test_member]
    environment = local.environment
    secrets     = local.credentials["rotate-tokens"]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = var.log_groups["rotate-tokens"].name
        awslogs-region        = local.region
        awslogs-stream-prefix = "rotate-tokens"
      }
    }
  })])
}

resource "aws_scheduler_schedule" "rotate_tokens" {
  name                = "${var.prefix}-rotate-tokens"
  description         = "Rotate the Memberson service token"
  schedule_expression = var.rotation_schedule
  kms_key_arn         = var.kms_key_arn
  flexible_time_window {
    mode = "OFF"
  }
  target {
    arn      = aws_ecs_cluster.como.arn
    role_arn = aws_iam_role.scheduler.arn
    ecs_parameters {
      task_definition_arn = aws_ecs_task_definition.rotate_tokens.arn_without_revision
      launch_type         = "FARGATE"
      network_configuration {
        subnets          = var.private_subnet_ids
        security_groups  = [aws_security_group.tasks.id]
        assign_public_ip = false
      }
    }
    retry_policy {
      maximum_retry_attempts       = 3
      maximum_event_age_in_seconds = 3600
    }
  }
}
