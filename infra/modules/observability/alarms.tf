# The alarms, each to the alarm topic (encrypted with the deployment's key; mail subscribers
# from var.alarm_emails):
# - a dead-letter queue holds a message (someone must look: `como-saga dlq list`);
# - a queue's oldest message is older than its limit (its consumers are down or behind);
# - a saga stopped for an operator (the metric filter in logs.tf);
# - the API answers too many 5xx, or a target behind the load balancer is unhealthy;
# - a service lost a task other than by a deployment, a scale-in or a Spot interruption (a
#   crash, a failed health check, a task that never started);
# - a service ran fewer tasks than its floor for five minutes, or sent no heartbeat at all.

resource "aws_sns_topic" "alarms" {
  name              = "${var.prefix}-alarms"
  kms_master_key_id = var.kms_key_arn
}

resource "aws_sns_topic_subscription" "alarm_emails" {
  for_each  = toset(var.alarm_emails)
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = each.value
}

locals {
  actions = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "dead_letters" {
  for_each            = var.dead_letter_queues
  alarm_name          = "${each.value.name}-not-empty"
  alarm_description   = "Dead letters in ${each.value.name}: inspect with `como-saga dlq list`, replay with `como-saga dlq redrive`."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = each.value.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
}

resource "aws_cloudwatch_metric_alarm" "oldest_message" {
  for_each            = var.queues
  alarm_name          = "${each.value.name}-oldest-message-age"
  alarm_description   = "The oldest message in ${each.value.name} waits longer than ${lookup(var.oldest_message_alarm_seconds, each.key, 600)} s: its consumers are down or behind."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = each.value.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 2
  threshold           = lookup(var.oldest_message_alarm_seconds, each.key, 600)
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
}

resource "aws_cloudwatch_metric_alarm" "needs_operator" {
  alarm_name          = "${var.prefix}-saga-needs-an-operator"
  alarm_description   = "A saga stopped for an operator in the last 5 minutes (new stops, not a standing count): `como-saga sagas list --status needs_operator`."
  namespace           = local.metric_namespace
  metric_name         = local.needs_operator_metric
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  depends_on          = [aws_cloudwatch_log_metric_filter.needs_operator]
}

resource "aws_cloudwatch_metric_alarm" "api_5xx" {
  alarm_name          = "${var.prefix}-api-5xx-rate"
  alarm_description   = "More than ${var.api_5xx_percent}% of the API's requests ended in a 5xx (the API's or the load balancer's) over 5 minutes."
  evaluation_periods  = 2
  datapoints_to_alarm = 2
  threshold           = var.api_5xx_percent
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions

  metric_query {
    id          = "rate"
    expression  = "100 * (FILL(target5xx, 0) + FILL(elb5xx, 0)) / requests"
    label       = "5xx, percent of requests"
    return_data = true
  }
  metric_query {
    id = "target5xx"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_Target_5XX_Count"
      dimensions  = { LoadBalancer = var.alb_arn_suffix, TargetGroup = var.target_group_arn_suffix }
      stat        = "Sum"
      period      = 300
    }
  }
  metric_query {
    id = "elb5xx"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_ELB_5XX_Count"
      dimensions  = { LoadBalancer = var.alb_arn_suffix }
      stat        = "Sum"
      period      = 300
    }
  }
  metric_query {
    id = "requests"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "RequestCount"
      dimensions  = { LoadBalancer = var.alb_arn_suffix }
      stat        = "Sum"
      period      = 300
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "api_unhealthy" {
  alarm_name          = "${var.prefix}-api-unhealthy-targets"
  alarm_description   = "An API task behind the load balancer fails its health check (GET /healthz)."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "UnHealthyHostCount"
  dimensions          = { LoadBalancer = var.alb_arn_suffix, TargetGroup = var.target_group_arn_suffix }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 3
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
}

# Task restarts: ECS reports every stopped task on the default bus (free); this rule keeps those
# of the deployment's services that stopped because something failed: an essential container
# exited (a crash, or a failed container health check), the task failed to start, or the load
# balancer's health check failed ("Task failed ..."). Deployments and scale-ins
# (ServiceSchedulerInitiated) and Spot interruptions (SpotInterruption) are not counted. The rule
# records each stop (logs.tf) and the alarm counts the rule's matches (AWS/Events TriggeredRules,
# the per-rule count: free, like every AWS/Events metric).
resource "aws_cloudwatch_event_rule" "task_stops" {
  name        = "${var.prefix}-task-stops"
  description = "A service's task stopped because a container exited, a health check failed or it never started"
  event_pattern = jsonencode({
    source        = ["aws.ecs"]
    "detail-type" = ["ECS Task State Change"]
    detail = {
      clusterArn = [var.cluster_arn]
      lastStatus = ["STOPPED"]
      group      = [{ prefix = "service:" }]
      "$or" = [
        { stopCode = ["EssentialContainerExited", "TaskFailedToStart"] },
        { stoppedReason = [{ prefix = "Task failed" }] },
      ]
    }
  })
}

resource "aws_cloudwatch_event_target" "task_stops" {
  rule = aws_cloudwatch_event_rule.task_stops.name
  arn  = aws_cloudwatch_log_group.task_stops.arn
}

resource "aws_cloudwatch_metric_alarm" "task_stops" {
  alarm_name          = "${var.prefix}-task-restarts"
  alarm_description   = "A service lost a task to a failure; why: log group ${aws_cloudwatch_log_group.task_stops.name}."
  namespace           = "AWS/Events"
  metric_name         = "TriggeredRules"
  dimensions          = { RuleName = aws_cloudwatch_event_rule.task_stops.name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
}

# Fewer tasks than the floor: a service's running tasks (its heartbeats a minute divided by the
# beats a task sends) below its min_tasks for five minutes in a row. No heartbeat at all (every
# task gone, or the heartbeat lost, which would also blind the backlog scaling) is treated as
# breaching. The floor is the normal one; the scheduled peak's higher floor is not watched.
resource "aws_cloudwatch_metric_alarm" "below_floor" {
  for_each            = var.heartbeat.floor
  alarm_name          = "${var.prefix}-${each.key}-below-floor"
  alarm_description   = "The ${each.key} service ran fewer than ${each.value} tasks (or sent no heartbeat) for 5 minutes: `aws ecs describe-services`, and the task stops in ${aws_cloudwatch_log_group.task_stops.name}."
  evaluation_periods  = 5
  datapoints_to_alarm = 5
  threshold           = each.value - 0.5
  comparison_operator = "LessThanThreshold"
  treat_missing_data  = "breaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions

  metric_query {
    id          = "tasks"
    expression  = "beats / ${var.heartbeat.beats_per_minute}"
    label       = "running ${each.key} tasks"
    return_data = true
  }
  metric_query {
    id = "beats"
    metric {
      namespace   = var.heartbeat.namespace
      metric_name = var.heartbeat.metric
      dimensions  = { Service = each.key }
      stat        = "SampleCount"
      period      = 60
    }
  }
}
