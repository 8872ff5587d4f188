# Least privilege: one task role per role, each allowed exactly the calls its code makes on
# exactly its resources (backends/aws/src lists them; every role connects by looking up the
# queue URLs and redrive policies and describing the table).

locals {
  queue_arns = { for q, queue in aws_sqs_queue.main : q => queue.arn }
  dlq_arns   = { for q, queue in aws_sqs_queue.dlq : q => queue.arn }
  table_arns = [aws_dynamodb_table.sagas.arn, "${aws_dynamodb_table.sagas.arn}/index/*"]
  task_roles = {
    orchestrator      = data.aws_iam_policy_document.orchestrator.json
    worker-crm        = data.aws_iam_policy_document.worker["crm"].json
    worker-sevenrooms = data.aws_iam_policy_document.worker["sevenrooms"].json
    rotate-tokens     = data.aws_iam_policy_document.rotate_tokens.json
  }
}

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

# Every role: look the queues and the table up at start.
data "aws_iam_policy_document" "connect" {
  statement {
    sid       = "resolve-queues"
    actions   = ["sqs:GetQueueUrl", "sqs:GetQueueAttributes"]
    resources = concat(values(local.queue_arns), values(local.dlq_arns))
  }
  statement {
    sid       = "describe-table"
    actions   = ["dynamodb:DescribeTable"]
    resources = [aws_dynamodb_table.sagas.arn]
  }
  statement {
    sid       = "use-the-key-through-dynamodb-and-secrets-manager"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.como.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values = [
        "dynamodb.${data.aws_region.current.name}.amazonaws.com",
        "secretsmanager.${data.aws_region.current.name}.amazonaws.com",
      ]
    }
  }
}

# The orchestrator: consumes requests and replies, sends commands, owns the saga items and
# their history, publishes lifecycle events; dead-letters refused requests and replies. Its
# notifier consumes the notifications it sends with a saga that needs an operator.
data "aws_iam_policy_document" "orchestrator" {
  source_policy_documents = [data.aws_iam_policy_document.connect.json]
  statement {
    sid       = "consume-requests-and-replies"
    actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:SendMessage"]
    resources = [local.queue_arns["requests"], local.queue_arns["replies"], local.queue_arns["notifications"]]
  }
  statement {
    sid       = "send-commands"
    actions   = ["sqs:SendMessage"]
    resources = [local.queue_arns["commands-crm"], local.queue_arns["commands-sevenrooms"]]
  }
  statement {
    sid       = "dead-letters-of-requests-and-replies"
    actions   = ["sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"]
    resources = [local.dlq_arns["requests"], local.dlq_arns["replies"], local.dlq_arns["notifications"]]
  }
  statement {
    sid       = "saga-store"
    actions   = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query", "dynamodb:BatchWriteItem"]
    resources = local.table_arns
  }
  statement {
    sid       = "lifecycle-events"
    actions   = ["events:PutEvents"]
    resources = [aws_cloudwatch_event_bus.como.arn]
  }
}

# A worker: consumes its own commands (and parks them by sending them back with a delay),
# replies, dead-letters unreadable commands, and keeps idempotency records, the table's `R#`
# items only.
data "aws_iam_policy_document" "worker" {
  for_each                = toset(["crm", "sevenrooms"])
  source_policy_documents = [data.aws_iam_policy_document.connect.json]
  statement {
    sid       = "consume-own-commands"
    actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:SendMessage"]
    resources = [local.queue_arns["commands-${each.key}"]]
  }
  statement {
    sid       = "dead-letter-own-commands"
    actions   = ["sqs:SendMessage"]
    resources = [local.dlq_arns["commands-${each.key}"]]
  }
  statement {
    sid       = "reply"
    actions   = ["sqs:SendMessage"]
    resources = [local.queue_arns["replies"]]
  }
  statement {
    sid       = "idempotency-records-only"
    actions   = ["dynamodb:GetItem", "dynamodb:PutItem"]
    resources = [aws_dynamodb_table.sagas.arn]
    condition {
      test     = "ForAllValues:StringLike"
      variable = "dynamodb:LeadingKeys"
      values   = ["R#*"]
    }
  }
  dynamic "statement" {
    for_each = each.key == "crm" ? [1] : []
    content {
      sid       = "read-the-memberson-token"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [aws_secretsmanager_secret.como["memberson-token"].arn]
    }
  }
}

# The scheduled rotation of the Memberson token: the token secret only.
data "aws_iam_policy_document" "rotate_tokens" {
  source_policy_documents = [data.aws_iam_policy_document.connect.json]
  statement {
    sid = "rotate-the-memberson-token"
    actions = [
      "secretsmanager:GetSecretValue",
      "secretsmanager:PutSecretValue",
      "secretsmanager:DescribeSecret",
      "secretsmanager:UpdateSecretVersionStage",
    ]
    resources = [aws_secretsmanager_secret.como["memberson-token"].arn]
  }
}

resource "aws_iam_role" "task" {
  for_each           = local.task_roles
  name               = "${var.prefix}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy" "task" {
  for_each = local.task_roles
  name     = "${var.prefix}-${each.key}"
  role     = aws_iam_role.task[each.key].id
  policy   = each.value
}

# The execution role: pull the image, write logs, and put the service credentials into the
# containers' environment.
data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "pull-the-image"
    actions   = ["ecr:GetAuthorizationToken", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
    resources = ["*"]
    #checkov:skip=CKV_AWS_356:ecr:GetAuthorizationToken cannot be scoped to a resource; the image pull actions name any repository the image may come from
  }
  statement {
    sid       = "write-logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.como.arn}:*"]
  }
  statement {
    sid     = "service-credentials"
    actions = ["secretsmanager:GetSecretValue"]
    resources = [
      aws_secretsmanager_secret.como["memberson-credentials"].arn,
      aws_secretsmanager_secret.como["sevenrooms-credentials"].arn,
    ]
  }
  statement {
    sid       = "decrypt-the-credentials"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.como.arn]
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.prefix}-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy" "execution" {
  name   = "${var.prefix}-execution"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# EventBridge's scheduler role: run the rotation task.
data "aws_iam_policy_document" "events_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "run_rotation" {
  statement {
    sid       = "run-the-rotation-task"
    actions   = ["ecs:RunTask"]
    resources = [aws_ecs_task_definition.rotate_tokens.arn_without_revision, "${aws_ecs_task_definition.rotate_tokens.arn_without_revision}:*"]
    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [aws_ecs_cluster.como.arn]
    }
  }
  statement {
    sid       = "pass-its-roles"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.execution.arn, aws_iam_role.task["rotate-tokens"].arn]
  }
}

resource "aws_iam_role" "run_rotation" {
  name               = "${var.prefix}-run-rotation"
  assume_role_policy = data.aws_iam_policy_document.events_assume.json
}

resource "aws_iam_role_policy" "run_rotation" {
  name   = "${var.prefix}-run-rotation"
  role   = aws_iam_role.run_rotation.id
  policy = data.aws_iam_policy_document.run_rotation.json
}
