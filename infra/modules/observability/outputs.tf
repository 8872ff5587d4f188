output "log_groups" {
  description = "Each role's log group: name and ARN."
  value       = { for role, group in aws_cloudwatch_log_group.role : role => { name = group.name, arn = group.arn } }
}

output "waf_log_group_arn" {
  value = aws_cloudwatch_log_group.waf.arn
}

output "alarm_topic_arn" {
  description = "Where every alarm goes: subscribe a pager or chat integration to it."
  value       = aws_sns_topic.alarms.arn
}

output "dashboard_name" {
  value = aws_cloudwatch_dashboard.como.dashboard_name
}
