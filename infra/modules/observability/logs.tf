# The log groups: one per role (the containers' JSON lines and their heartbeat metric lines),
# the firewall's, and the record of stopped tasks. Every one keeps its logs
# var.log_retention_days and is encrypted with the deployment's key (whose policy lets
# CloudWatch Logs use it for these names only).

resource "aws_cloudwatch_log_group" "role" {
  for_each          = toset(var.roles)
  name              = "/ecs/${var.prefix}/${each.value}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

# The firewall's log: CloudWatch Logs takes it only in a group whose name begins with
# aws-waf-logs-.
resource "aws_cloudwatch_log_group" "waf" {
  name              = "aws-waf-logs-${var.prefix}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

# Every task a service lost other than by a deployment or a scale-in (alarms.tf): the event
# says why (a container exited, a health check failed, the task never started).
resource "aws_cloudwatch_log_group" "task_stops" {
  name              = "/aws/events/${var.prefix}/task-stops"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

resource "aws_cloudwatch_log_resource_policy" "task_stops" {
  policy_name     = "${var.prefix}-task-stops"
  policy_document = data.aws_iam_policy_document.task_stops.json
}

data "aws_iam_policy_document" "task_stops" {
  statement {
    sid       = "eventbridge-writes-task-stops"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.task_stops.arn}:*"]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com", "delivery.logs.amazonaws.com"]
    }
  }
}

# "Sagas needing an operator": the orchestrator (and the API, when an operator's action leads
# there) writes one JSON line `{"message":"saga needs an operator","target":"saga",...}` at the
# default level each time a saga stops for an operator. This counts those lines: new stops per
# period, not how many sagas are waiting now (the dashboard's counts say that).
resource "aws_cloudwatch_log_metric_filter" "needs_operator" {
  for_each       = toset(["orchestrator", "api"])
  name           = "${var.prefix}-${each.value}-saga-needs-an-operator"
  log_group_name = aws_cloudwatch_log_group.role[each.value].name
  pattern        = "{ ($.message = \"saga needs an operator\") && ($.target = \"saga\") }"
  metric_transformation {
    name      = local.needs_operator_metric
    namespace = local.metric_namespace
    value     = "1"
    unit      = "Count"
  }
}

locals {
  metric_namespace      = var.prefix
  needs_operator_metric = "SagasNeedingOperator"
}
