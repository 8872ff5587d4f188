# The bus: booking requests come in as `BookingRequested` events (source como.booking) and the
# rule routes them into the request queue; lifecycle events (source como.saga) go out on it.
resource "aws_cloudwatch_event_bus" "como" {
  name = local.bus_name
}

resource "aws_cloudwatch_event_rule" "booking" {
  name           = local.rule_name
  description    = "Booking requests submitted as events go to the request queue"
  event_bus_name = aws_cloudwatch_event_bus.como.name
  event_pattern = jsonencode({
    source        = [local.booking_source]
    "detail-type" = [local.booking_detail_type]
  })
}

# The whole event goes to the queue, as `infra bootstrap` sets it up: the backend hands the
# orchestrator the event's `detail` (docs/aws.md, "Event routing").
resource "aws_cloudwatch_event_target" "booking" {
  rule           = aws_cloudwatch_event_rule.booking.name
  event_bus_name = aws_cloudwatch_event_bus.como.name
  target_id      = local.booking_target_id
  arn            = aws_sqs_queue.main["requests"].arn
}
