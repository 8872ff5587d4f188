# Each service scales between min_tasks (two or more: one per zone) and max_tasks.
# - The orchestrator and the workers track their queue's backlog per running task: visible
#   messages (the orchestrator: requests and replies together) divided by the service's running
#   tasks, held near var.backlog_per_task. The running tasks are the service's heartbeats in the
#   minute divided by six (each task beats every 10 s: local.heartbeat in ecs.tf), never less
#   than one, so the division is always defined; a minute without any heartbeat gives no data
#   point, and target tracking takes no action on it. No Container Insights.
# - The API tracks requests per task through the load balancer, and CPU.
# - A known peak raises the queue-driven services' floor ahead of time (scheduled actions).

locals {
  backlog_queues = {
    orchestrator      = ["requests", "replies"]
    worker-crm        = ["commands-crm"]
    worker-sevenrooms = ["commands-sevenrooms"]
  }
  peak_services = var.peak.start == "" ? {} : local.backlog_queues
}

resource "aws_appautoscaling_target" "role" {
  for_each           = local.services
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.como.name}/${aws_ecs_service.role[each.key].name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.min_tasks[each.key]
  max_capacity       = var.max_tasks[each.key]
}

resource "aws_appautoscaling_policy" "backlog" {
  for_each           = local.backlog_queues
  name               = "${var.prefix}-${each.key}-backlog-per-task"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.role[each.key].service_namespace
  resource_id        = aws_appautoscaling_target.role[each.key].resource_id
  scalable_dimension = aws_appautoscaling_target.role[each.key].scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.backlog_per_task
    scale_out_cooldown = 60
    scale_in_cooldown  = 300

    customized_metric_specification {
      dynamic "metrics" {
        for_each = each.value
        content {
          id          = "q${metrics.key}"
          label       = "visible messages in ${var.queues[metrics.value].name}"
          return_data = false
          metric_stat {
            stat = "Sum"
            metric {
              namespace   = "AWS/SQS"
              metric_name = "ApproximateNumberOfMessagesVisible"
              dimensions {
                name  = "QueueName"
                value = var.queues[metrics.value].name
              }
            }
          }
        }
      }
      metrics {
        id          = "beats"
        label       = "heartbeats of the ${each.key} tasks"
        return_data = false
        metric_stat {
          stat = "SampleCount"
          metric {
            namespace   = local.heartbeat.namespace
            metric_name = local.heartbeat.metric
            dimensions {
              name  = "Service"
              value = each.key
            }
          }
        }
      }
      metrics {
        id          = "tasks"
        label       = "running tasks (heartbeats a minute / ${local.heartbeat.beats_per_minute})"
        expression  = "beats / ${local.heartbeat.beats_per_minute}"
        return_data = false
      }
      metrics {
        id          = "backlog_per_task"
        label       = "visible messages per running task"
        expression  = "(${join(" + ", [for i, _ in each.value : "q${i}"])}) / IF(tasks > 1, tasks, 1)"
        return_data = true
      }
    }
  }
}

resource "aws_appautoscaling_policy" "api_requests" {
  name               = "${var.prefix}-api-requests-per-task"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.role["api"].service_namespace
  resource_id        = aws_appautoscaling_target.role["api"].resource_id
  scalable_dimension = aws_appautoscaling_target.role["api"].scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.api_requests_per_task
    scale_out_cooldown = 60
    scale_in_cooldown  = 300
    predefined_metric_specification {
      predefined_metric_type = "ALBRequestCountPerTarget"
      resource_label         = "${var.alb_arn_suffix}/${var.target_group_arn_suffix}"
    }
  }
}

resource "aws_appautoscaling_policy" "api_cpu" {
  name               = "${var.prefix}-api-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.role["api"].service_namespace
  resource_id        = aws_appautoscaling_target.role["api"].resource_id
  scalable_dimension = aws_appautoscaling_target.role["api"].scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = 60
    scale_out_cooldown = 60
    scale_in_cooldown  = 300
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

# The known peak: the floor rises at its start and comes back at its end (target tracking
# still scales above it).
resource "aws_appautoscaling_scheduled_action" "peak_start" {
  for_each           = local.peak_services
  name               = "${var.prefix}-${each.key}-peak-start"
  service_namespace  = aws_appautoscaling_target.role[each.key].service_namespace
  resource_id        = aws_appautoscaling_target.role[each.key].resource_id
  scalable_dimension = aws_appautoscaling_target.role[each.key].scalable_dimension
  schedule           = var.peak.start
  timezone           = var.peak.timezone
  scalable_target_action {
    min_capacity = max(var.peak.min_tasks, var.min_tasks[each.key])
    max_capacity = max(var.peak.min_tasks, var.max_tasks[each.key])
  }
}

resource "aws_appautoscaling_scheduled_action" "peak_end" {
  for_each           = local.peak_services
  name               = "${var.prefix}-${each.key}-peak-end"
  service_namespace  = aws_appautoscaling_target.role[each.key].service_namespace
  resource_id        = aws_appautoscaling_target.role[each.key].resource_id
  scalable_dimension = aws_appautoscaling_target.role[each.key].scalable_dimension
  schedule           = var.peak.end
  timezone           = var.peak.timezone
  scalable_target_action {
    min_capacity = var.min_tasks[each.key]
    max_capacity = var.max_tasks[each.key]
  }
  # Two scheduled actions on one target are applied one at a time.
  depends_on = [aws_appautoscaling_scheduled_action.peak_start]
}
