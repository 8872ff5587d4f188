# One ECS Fargate service per role, all on the one como-saga image, with the AWS backend
# selected by environment (the SDK's standard configuration does the rest); the Memberson
# token is rotated by a scheduled task.

locals {
  services = {
    orchestrator      = ["orchestrator"]
    worker-crm        = ["worker", "crm"]
    worker-sevenrooms = ["worker", "sevenrooms"]
  }
  environment = [
    { name = "COMO_SAGA_BACKEND", value = "aws" },
    { name = "COMO_SAGA_AWS_PREFIX", value = var.prefix },
    { name = "AWS_REGION", value = data.aws_region.current.name },
    { name = "COMO_SAGA_MEMBERSON_URL", value = var.memberson_url },
    { name = "COMO_SAGA_SEVENROOMS_URL", value = var.sevenrooms_url },
    { name = "COMO_SAGA_VENUES", value = jsonencode(var.venues) },
  ]
  credentials = [
    { name = "COMO_SAGA_MEMBERSON_SVC_AUTH", valueFrom = "${aws_secretsmanager_secret.como["memberson-credentials"].arn}:svc_auth::" },
    { name = "COMO_SAGA_MEMBERSON_USERNAME", valueFrom = "${aws_secretsmanager_secret.como["memberson-credentials"].arn}:username::" },
    { name = "COMO_SAGA_MEMBERSON_PASSWORD", valueFrom = "${aws_secretsmanager_secret.como["memberson-credentials"].arn}:password::" },
    { name = "COMO_SAGA_SEVENROOMS_CLIENT_ID", valueFrom = "${aws_secretsmanager_secret.como["sevenrooms-credentials"].arn}:client_id::" },
    { name = "COMO_SAGA_SEVENROOMS_CLIENT_SECRET", valueFrom = "${aws_secretsmanager_secret.como["sevenrooms-credentials"].arn}:client_secret::" },
  ]
}

resource "aws_ecs_cluster" "como" {
  name = var.prefix
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_cloudwatch_log_group" "como" {
  name              = "/ecs/${var.prefix}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.como.arn
}

# No inbound traffic; outbound HTTPS only (the AWS APIs, Memberson, SevenRooms).
resource "aws_security_group" "tasks" {
  name        = "${var.prefix}-tasks"
  description = "como-saga tasks: no inbound, HTTPS out"
  vpc_id      = var.vpc_id
  egress {
    description = "HTTPS to the AWS APIs and the downstream APIs"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_ecs_task_definition" "role" {
  for_each                 = local.services
  family                   = "${var.prefix}-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 512
  memory                   = 1024
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task[each.key].arn
  container_definitions = jsonencode([{
    name                   = each.key
    image                  = var.image
    essential              = true
    command                = each.value
    readonlyRootFilesystem = true
    environment            = local.environment
    secrets                = local.credentials
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.como.name
        awslogs-region        = data.aws_region.current.name
        awslogs-stream-prefix = each.key
      }
    }
  }])
}

resource "aws_ecs_service" "role" {
  for_each        = local.services
  name            = "${var.prefix}-${each.key}"
  cluster         = aws_ecs_cluster.como.id
  task_definition = aws_ecs_task_definition.role[each.key].arn
  desired_count   = var.desired_count[each.key]
  launch_type     = "FARGATE"
  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }
}

# `como-saga rotate-tokens` on a schedule.
resource "aws_ecs_task_definition" "rotate_tokens" {
  family                   = "${var.prefix}-rotate-tokens"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 256
  memory                   = 512
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task["rotate-tokens"].arn
  container_definitions = jsonencode([{
    name                   = "rotate-tokens"
    image                  = var.image
    essential              = true
    command                = ["rotate-tokens"]
    readonlyRootFilesystem = true
    environment            = local.environment
    secrets                = local.credentials
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.como.name
        awslogs-region        = data.aws_region.current.name
        awslogs-stream-prefix = "rotate-tokens"
      }
    }
  }])
}

resource "aws_cloudwatch_event_rule" "rotate_tokens" {
  name                = "${var.prefix}-rotate-tokens"
  description         = "Rotate the Memberson service token"
  schedule_expression = var.rotation_schedule
}

resource "aws_cloudwatch_event_target" "rotate_tokens" {
  rule     = aws_cloudwatch_event_rule.rotate_tokens.name
  arn      = aws_ecs_cluster.como.arn
  role_arn = aws_iam_role.run_rotation.arn
  ecs_target {
    task_definition_arn = aws_ecs_task_definition.rotate_tokens.arn
    launch_type         = "FARGATE"
    network_configuration {
      subnets          = var.subnet_ids
      security_groups  = [aws_security_group.tasks.id]
      assign_public_ip = false
    }
  }
}
