# One ECS Fargate service per role, all on the one como-saga image (/usr/local/bin/como-saga),
# the AWS backend selected by environment (the SDK's standard configuration does the rest),
# each at least two tasks in the private subnets of both zones: ECS spreads a service's tasks
# over the zones of its subnets, so losing a zone leaves every service running. A failed
# deployment rolls back by itself (the circuit breaker). Logs are JSON lines
# (COMO_SAGA_LOG_FORMAT=json), so that the observability module can count what they report.
# Every service's tasks beat (local.heartbeat): a service's running tasks are read from its
# beats, not from Container Insights, which is off.

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

  # The heartbeat: with COMO_SAGA_EMF_NAMESPACE set, every role process (the API, the
  # orchestrator, each worker) prints one CloudWatch embedded-metric line on standard output
  # every 10 s: RunningTaskBeats = 1 with the dimension Service = COMO_SAGA_EMF_SERVICE (here the
  # role's name, the service's short name). The awslogs driver ships it to the role's log group
  # and CloudWatch Logs turns it into the metric, so a service's running tasks are its beats in
  # a minute divided by six: what the backlog per task divides by (autoscaling.tf), what the
  # "fewer tasks than the floor" alarms and the dashboard read (observability module). One
  # custom metric per service, no Container Insights (docs/DEPLOY.md prices both).
  heartbeat = {
    namespace        = var.prefix
    metric           = "RunningTaskBeats"
    beats_per_minute = 6
  }

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
    # No overview reads while no dashboard is open: each read counts every saga in the table
    # (docs/DEPLOY.md prices the reads by the hours a dashboard is watched).
    { name = "COMO_SAGA_DASHBOARD_IDLE_REFRESH", value = "off" },
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
  # role's log group. On SIGTERM (a deployment, a scale-in, a Spot interruption) a role stops
  # taking messages and finishes its batch for up to 30 s (the binary's shutdown grace): ECS
  # waits 45 s before SIGKILL, so the grace runs out first.
  container_defaults = {
    image                  = var.image
    essential              = true
    readonlyRootFilesystem = true
    linuxParameters        = { capabilities = { drop = ["ALL"] } }
    stopTimeout            = 45
  }

  # Where each service's tasks run. The floor (min_tasks: two or more, one per zone) is always
  # Fargate on demand (the FARGATE provider's base). Above the floor (scale-out, the scheduled
  # peak) the queue-driven services' extra tasks run on Fargate Spot when var.spot_above_floor
  # is set; the API's stay on demand.
  spot = { for role in keys(local.services) : role => var.spot_above_floor && contains(keys(local.backlog_queues), role) }
}

resource "aws_ecs_cluster" "como" {
  #checkov:skip=CKV_AWS_65:Container Insights would cost about $34 a month here (about 112 metrics for 4 services, docs/DEPLOY.md); the running tasks come from the tasks' own heartbeat metric, CPU from the free AWS/ECS metrics, task failures from ECS's task state events (alarmed in the observability module)
  name = var.prefix
  # Container Insights stays off (it would cost about $34 a month here: docs/DEPLOY.md): the
  # running tasks that the scaling divides by come from the tasks' heartbeat (local.heartbeat),
  # CPU from the free AWS/ECS metrics, task failures from ECS's own events.
  setting {
    name  = "containerInsights"
    value = "disabled"
  }
}

# Fargate on demand and Fargate Spot, for the services' capacity provider strategies.
resource "aws_ecs_cluster_capacity_providers" "como" {
  cluster_name       = aws_ecs_cluster.como.name
  capacity_providers = ["FARGATE", "FARGATE_SPOT"]
  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
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
      # The heartbeat: RunningTaskBeats of Service = the role, in the deployment's namespace.
      [
        { name = "COMO_SAGA_EMF_NAMESPACE", value = local.heartbeat.namespace },
        { name = "COMO_SAGA_EMF_SERVICE", value = each.key },
      ],
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
  platform_version                   = "LATEST"
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = each.key == "api" ? 60 : null
  propagate_tags                     = "SERVICE"
  enable_ecs_managed_tags            = true

  # The first min_tasks tasks (the floor, one per zone at least) on Fargate on demand; the rest
  # on Fargate Spot for the queue-driven services (local.spot), on demand for the API. ECS spreads
  # a service's tasks over the zones of its subnets.
  capacity_provider_strategy {
    capacity_provider = "FARGATE"
    base              = var.min_tasks[each.key]
    weight            = local.spot[each.key] ? 0 : 1
  }
  dynamic "capacity_provider_strategy" {
    for_each = local.spot[each.key] ? ["FARGATE_SPOT"] : []
    content {
      capacity_provider = capacity_provider_strategy.value
      base              = 0
      weight            = 1
    }
  }

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

  depends_on = [aws_ecs_cluster_capacity_providers.como]
}
