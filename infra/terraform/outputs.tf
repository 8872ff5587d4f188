output "queue_urls" {
  value = { for q, queue in aws_sqs_queue.main : q => queue.url }
}

output "table" {
  value = aws_dynamodb_table.sagas.name
}

output "bus" {
  value = aws_cloudwatch_event_bus.como.name
}

output "cluster" {
  value = aws_ecs_cluster.como.name
}
