# One CloudWatch dashboard: the saga pipeline (queue depths and ages, dead letters, sagas
# stopped for an operator), the edge (requests, 5xx, latency, the firewall's blocks) and the
# services (running tasks, CPU). The operator's own dashboard (the API's /dashboard/) shows the
# sagas themselves.

locals {
  region = data.aws_region.current.name
  queue_metrics = [
    for q in values(var.queues) : ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", q.name]
  ]
  queue_age_metrics = [
    for q in values(var.queues) : ["AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", q.name]
  ]
  dlq_metrics = [
    for q in values(var.dead_letter_queues) : ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", q.name]
  ]
  # Running tasks per service: its heartbeats a minute (hidden) divided by the beats a task sends
  # a minute (the compute module's heartbeat; no Container Insights).
  heartbeat_roles = sort(keys(var.heartbeat.floor))
  running_task_metrics = concat(
    [for i, role in local.heartbeat_roles : [var.heartbeat.namespace, var.heartbeat.metric, "Service", role, { id = "b${i}", stat = "SampleCount", visible = false }]],
    [for i, role in local.heartbeat_roles : [{ id = "t${i}", expression = "b${i} / ${var.heartbeat.beats_per_minute}", label = role }]],
  )
  cpu_metrics = [
    for s in values(var.service_names) : ["AWS/ECS", "CPUUtilization", "ClusterName", var.cluster_name, "ServiceName", s]
  ]
  widget = { width = 8, height = 6 }
}

resource "aws_cloudwatch_dashboard" "como" {
  dashboard_name = var.prefix
  dashboard_body = jsonencode({
    widgets = [
      { type = "metric", x = 0, y = 0, width = local.widget.width, height = local.widget.height, properties = {
        title = "Visible messages per queue", region = local.region, stat = "Maximum", period = 60, view = "timeSeries",
        metrics = local.queue_metrics
      } },
      { type = "metric", x = 8, y = 0, width = local.widget.width, height = local.widget.height, properties = {
        title = "Oldest message per queue (s)", region = local.region, stat = "Maximum", period = 60, view = "timeSeries",
        metrics = local.queue_age_metrics
      } },
      { type = "metric", x = 16, y = 0, width = local.widget.width, height = local.widget.height, properties = {
        title = "Dead letters", region = local.region, stat = "Maximum", period = 300, view = "timeSeries",
        metrics = local.dlq_metrics
      } },
      { type = "metric", x = 0, y = 6, width = local.widget.width, height = local.widget.height, properties = {
        title = "Sagas stopped for an operator (new, per 5 min)", region = local.region, stat = "Sum", period = 300, view = "timeSeries",
        metrics = [[local.metric_namespace, local.needs_operator_metric]]
      } },
      { type = "metric", x = 8, y = 6, width = local.widget.width, height = local.widget.height, properties = {
        title = "API: requests and 5xx", region = local.region, stat = "Sum", period = 300, view = "timeSeries",
        metrics = [
          ["AWS/ApplicationELB", "RequestCount", "LoadBalancer", var.alb_arn_suffix],
          ["AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", "LoadBalancer", var.alb_arn_suffix, "TargetGroup", var.target_group_arn_suffix],
          ["AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", "LoadBalancer", var.alb_arn_suffix],
        ]
      } },
      { type = "metric", x = 16, y = 6, width = local.widget.width, height = local.widget.height, properties = {
        title = "API: response time p99 (s) and firewall blocks", region = local.region, period = 300, view = "timeSeries",
        metrics = [
          ["AWS/ApplicationELB", "TargetResponseTime", "LoadBalancer", var.alb_arn_suffix, { stat = "p99" }],
          ["AWS/WAFV2", "BlockedRequests", "WebACL", var.web_acl_name, "Region", local.region, "Rule", "ALL", { stat = "Sum", yAxis = "right" }],
        ]
      } },
      { type = "metric", x = 0, y = 12, width = 12, height = local.widget.height, properties = {
        title = "Running tasks per service (heartbeats a minute / ${var.heartbeat.beats_per_minute})", region = local.region, period = 60, view = "timeSeries",
        metrics = local.running_task_metrics
      } },
      { type = "metric", x = 12, y = 12, width = 12, height = local.widget.height, properties = {
        title = "CPU per service (%)", region = local.region, stat = "Average", period = 60, view = "timeSeries",
        metrics = local.cpu_metrics
      } },
    ]
  })
}
