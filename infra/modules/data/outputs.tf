output "kms_key_arn" {
  description = "The deployment's customer-managed key."
  value       = aws_kms_key.como.arn
}

output "queues" {
  description = "Each queue by its own name: name, ARN and URL."
  value       = { for q, queue in aws_sqs_queue.main : q => { name = queue.name, arn = queue.arn, url = queue.url } }
}

output "dead_letter_queues" {
  description = "Each queue's dead-letter queue, by the queue's own name."
  value       = { for q, queue in aws_sqs_queue.dlq : q => { name = queue.name, arn = queue.arn, url = queue.url } }
}

output "table_name" {
  value = aws_dynamodb_table.sagas.name
}

output "table_arn" {
  value = aws_dynamodb_table.sagas.arn
}

output "bus_name" {
  value = aws_cloudwatch_event_bus.como.name
}

output "bus_arn" {
  value = aws_cloudwatch_event_bus.como.arn
}

output "secret_arns" {
  description = "Each secret's ARN by its own name (memberson-token, memberson-credentials, sevenrooms-credentials, data-keys)."
  value       = { for s, secret in aws_secretsmanager_secret.como : s => secret.arn }
}
