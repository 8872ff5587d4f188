# One ECS Fargate service per role, all on the one como-saga image (/usr/local/bin/como-saga),
# the AWS backend selected by environment (the SDK's standard configuration does the rest),
# each at least two tasks in the private subnets of both zones: ECS spreads a service's tasks
# over the zones of its subnets, so losing a zone leaves every service running. A failed
# deployment rolls back by itself (the circuit breaker). Logs are JSON lines
# (COMO_SAGA_LOG_FORMAT=json), so that the observability module can count what they report.

locals {
  region = data.aws_region.current.name

  # The roles that run as services: their command, and where their liveness is answered.
  services = {
    api = {
      command = ["api"]
      health  = "http://127.0.0.1:8080/healthz"
    }
    orchestrator = {
      command = ["orchestrator"]
      health  = "http://127.0.0.1:9090/healthz"
    }
    worker-crm = {
      command = ["worker", "crm"]
      health  = "http://127.0.0.1:9090/healthz"
    }
    worker-sevenrooms = {
      command = ["worker", "sevenrooms"]
      health  = "http://127.0.0.1:9090/healthz"
    }
  }
  api_port = 8080

  environment = [
    { name = "COMO_SAGA_BACKEND", value = "aws" },
    { name = "COMO_SAGA_AWS_PREFIX", value = var.prefix },
    { name = "AWS_REGION", value = local.region },
    { name = "COMO_SAGA_MEMBERSON_URL", value = var.memberson_url },
    { name = "COMO_SAGA_SEVENROOMS_URL", value = var.sevenrooms_url },
    { name = "COMO_SAGA_VENUES", value = jsonencode(var.venues) },
    { name = "COMO_SAGA_DEADLINE", value = var.deadline },
    { name = "COMO_SAGA_LOG_FORMAT", value = "json" },
  ]
  # The API: listens for the load balancer, checks tokens against the user pool, and links the
  # dashboard to the hosted UI.
  api_environment = [
    { name = "COMO_SAGA_API_LISTEN", value = "0.0.0.0:${local.api_port}" },
    { name = "COMO_SAGA_JWKS", value = var.api_auth.jwks_url },
    { name = "COMO_SAGA_JWT_ISSUER", value = var.api_auth.issuer },
    { name = "COMO_SAGA_JWT_AUDIENCE", value = var.api_auth.audience },
    { name = "COMO_SAGA_DASHBOARD_SIGNIN_URL", value = var.api_auth.signin_url },
    { name = "COMO_SAGA_DASHBOARD_REFRESH", value = var.dashboard_refresh },
  ]
  # The orchestrator and the workers answer their liveness inside the task only.
  health_environment = [
    { name = "COMO_SAGA_HEALTH_LISTEN", value = "127.0.0.1:9090" },
  ]

  # Each role gets the credentials it uses and no others (the API reads SevenRooms'
  # availability when a member views an experience).
  memberson_credentials = [
    { name = "COMO_SAGA_MEMBERSON_SVC_AUTH", valueFrom = "${var.secret_arns["memberson-credentials"]}:svc_auth::" },
    { name = "COMO_SAGA_MEMBERSON_USERNAME", valueFrom = "${var.secret_arns["memberson-credentials"]}:username::" },
    { name = "COMO_SAGA_MEMBERSON_PASSWORD", valueFrom = "${var.secret_arns["memberson-credentials"]}:password::" },
  ]
  sevenrooms_credentials = [
    { name = "COMO_SAGA_SEVENROOMS_CLIENT_ID", valueFrom = "${var.secret_arns["sevenrooms-credentials"]}:client_id::" },
    { name = "COMO_SAGA_SEVENROOMS_CLIENT_SECRET", valueFrom = "${var.secret_arns["sevenrooms-credentials"]}:client_secret::" },
  ]
  credentials = {
    api               = local.sevenrooms_credentials
    orchestrator      = []
    worker-crm        = local.memberson_credentials
    worker-sevenrooms = local.sevenrooms_credentials
    rotate-tokens     = local.memberson_credentials
  }

  # What every container shares: no writable root, no Linux capabilities, JSON logs to its
  # role's log group.
  container_defaults = {
    image                  = var.image
    essential              = true
    readonlyRootFilesystem = true
    linuxParameters        = { capabilities = { drop = ["ALL"] } }
  }
}

resource "aws_ecs_cluster" "como" {
  name = var.prefix
  # Container Insights publishes RunningTaskCount, which the queue-driven services' scaling
  # divides their backlog by (autoscaling.tf); docs/DEPLOY.md prices it.
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

# The orchestrator and the workers: no inbound traffic; outbound HTTPS only (the AWS APIs,
# Memberson, SevenRooms).
resource "aws_security_group" "tasks" {
  name        = "${var.prefix}-tasks"
  description = "como-saga orchestrator and workers: no inbound, HTTPS out"
  vpc_id      = var.vpc_id
  egress {
    description = "HTTPS to the AWS APIs and the downstream APIs"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

# The API: its port from the load balancer only; outbound HTTPS (the AWS APIs, the user pool's
# key set, SevenRooms for the experience views).
resource "aws_security_group" "api" {
  name        = "${var.prefix}-api"
  description = "como-saga API: its port from the load balancer, HTTPS out"
  vpc_id      = var.vpc_id
  ingress {
    description     = "The API from the load balancer"
    from_port       = local.api_port
    to_port         = local.api_port
    protocol        = "tcp"
    security_groups = [var.alb_security_group_id]
  }
  egress {
    description = "HTTPS to the AWS APIs, Cognito and SevenRooms"
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
  cpu                      = var.task_size[each.key].cpu
  memory                   = var.task_size[each.key].memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task[each.key].arn
  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }
  container_definitions = jsonencode([merge(local.container_defaults, {
    name    = each.key
    command = each.value.command
    environment = concat(
      local.environment,
      each.key == "api" ? local.api_environment : local.health_environment,
    )
    secrets      = local.credentials[each.key]
    portMappings = each.key == "api" ? [{ containerPort = local.api_port, protocol = "tcp" }] : []
    # `como-saga healthcheck URL` exits 0 iff the URL answers 2xx within 2 s: the image needs
    # no curl.
    healthCheck = {
      command     = ["CMD", "/usr/local/bin/como-saga", "healthcheck", each.value.health]
      interval    = 15
      timeout     = 5
      retries     = 3
      startPeriod = 30
    }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = var.log_groups[each.key].name
        awslogs-region        = local.region
        awslogs-stream-prefix = each.key
      }
    }
  })])
}

resource "aws_ecs_service" "role" {
  for_each                           = local.services
  name                               = "${var.prefix}-${each.key}"
  cluster                            = aws_ecs_cluster.como.id
  task_definition                    = aws_ecs_task_definition.role[each.key].arn
  desired_count                      = var.min_tasks[each.key]
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = each.key == "api" ? 60 : null
  propagate_tags                     = "SERVICE"
  enable_ecs_managed_tags            = true

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [each.key == "api" ? aws_security_group.api.id : aws_security_group.tasks.id]
    assign_public_ip = false
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  dynamic "load_balancer" {
    for_each = each.key == "api" ? [1] : []
    content {
      target_group_arn = var.target_group_arn
      container_name   = "api"
      container_port   = local.api_port
    }
  }

  # CI rolls new images as new task definition revisions (docs/DEPLOY.md) and autoscaling
  # owns the count: Terraform sets both at creation only.
  lifecycle {
    ignore_changes = [task_definition, desired_count]
  }
}
