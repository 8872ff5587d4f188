# Least privilege: one task role per role, each allowed exactly the calls its code makes on
# exactly its resources (backends/aws/src lists them; every role connects by looking up the
# queue URLs and redrive policies and describing the table). The key is usable only through
# the services that encrypt with it (kms:ViaService).
#
# The data keys (the secret `<prefix>/data-keys`, the keyring that seals the guests' name,
# phone and e-mail) are read (GetSecretValue, at start and every ten minutes) by the roles that
# seal or open a contact only: the API (it seals a submitted booking's guest, opens it for
# operators), the orchestrator (it seals a request that arrives in the clear) and the
# SevenRooms worker (it opens the guest to book the table). The CRM worker and the token
# rotation never see a contact and cannot read them. Writing them (`keys init`, `keys rotate`)
# is the `keys` role's alone.

locals {
  queue_arns = { for q, queue in var.queues : q => queue.arn }
  dlq_arns   = { for q, queue in var.dead_letter_queues : q => queue.arn }
  table_arns = [var.table_arn, "${var.table_arn}/index/*"]
  task_roles = {
    api               = data.aws_iam_policy_document.api.json
    orchestrator      = data.aws_iam_policy_document.orchestrator.json
    worker-crm        = data.aws_iam_policy_document.worker["crm"].json
    worker-sevenrooms = data.aws_iam_policy_document.worker["sevenrooms"].json
    rotate-tokens     = data.aws_iam_policy_document.rotate_tokens.json
    keys              = data.aws_iam_policy_document.keys.json
  }
  account = data.aws_caller_identity.current.account_id
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
      values   = [local.account]
    }
  }
}

# Every role: look the queues and the table up at start, and use the key through the services
# that hold its data (the queues, the table, the secrets).
data "aws_iam_policy_document" "connect" {
  statement {
    sid       = "resolve-queues"
    actions   = ["sqs:GetQueueUrl", "sqs:GetQueueAttributes"]
    resources = concat(values(local.queue_arns), values(local.dlq_arns))
  }
  statement {
    sid       = "describe-table"
    actions   = ["dynamodb:DescribeTable"]
    resources = [var.table_arn]
  }
  statement {
    sid       = "use-the-key-through-sqs-dynamodb-and-secrets-manager"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values = [
        "sqs.${local.region}.amazonaws.com",
        "dynamodb.${local.region}.amazonaws.com",
        "secretsmanager.${local.region}.amazonaws.com",
      ]
    }
  }
}

# The operator API: reads sagas, their history, the audit list and the workers' health records
# (lists read items in batches); an operator's action advances a saga like the orchestrator
# does (the write, then its commands, notifications and lifecycle events); a submitter's
# booking goes to the request queue; dead letters are listed and put back on their queues; a
# member's erasure rewrites the dead letters that hold a guest (sent again to their DLQ, changed).
data "aws_iam_policy_document" "api" {
  source_policy_documents = [data.aws_iam_policy_document.connect.json]
  statement {
    sid       = "send-requests-commands-notifications-and-redriven-messages"
    actions   = ["sqs:SendMessage"]
    resources = values(local.queue_arns)
  }
  statement {
    sid       = "list-and-redrive-dead-letters"
    actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"]
    resources = values(local.dlq_arns)
  }
  statement {
    sid       = "erase-guests-in-dead-letters"
    actions   = ["sqs:SendMessage"]
    resources = [local.dlq_arns["requests"], local.dlq_arns["commands-sevenrooms"]]
  }
  statement {
    sid       = "saga-store-reads-actions-and-audit"
    actions   = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem"]
    resources = local.table_arns
  }
  statement {
    sid       = "lifecycle-events"
    actions   = ["events:PutEvents"]
    resources = [var.bus_arn]
  }
  statement {
    sid       = "read-the-data-keys"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.secret_arns["data-keys"]]
  }
}

# The orchestrator: consumes requests and replies, sends commands, owns the saga items and
# their history, publishes lifecycle events; dead-letters refused requests and replies, and
# erases the guest of the dead letters past the retention (requests, SevenRooms commands). Its
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
    sid       = "erase-guests-in-sevenrooms-dead-letters"
    actions   = ["sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"]
    resources = [local.dlq_arns["commands-sevenrooms"]]
  }
  statement {
    sid       = "saga-store"
    actions   = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query", "dynamodb:BatchWriteItem"]
    resources = local.table_arns
  }
  statement {
    sid       = "lifecycle-events"
    actions   = ["events:PutEvents"]
    resources = [var.bus_arn]
  }
  # Read only: `keys init` and `keys rotate` run with the orchestrator's task definition, but
  # under the `keys` role (a task role override), not this one.
  statement {
    sid       = "read-the-data-keys"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.secret_arns["data-keys"]]
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
    resources = [var.table_arn]
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
      resources = [var.secret_arns["memberson-token"]]
    }
  }
  # The SevenRooms worker opens the guest's contact to book; the CRM worker never reads it.
  dynamic "statement" {
    for_each = each.key == "sevenrooms" ? [1] : []
    content {
      sid       = "read-the-data-keys"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [var.secret_arns["data-keys"]]
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
    resources = [var.secret_arns["memberson-token"]]
  }
}

# `como-saga keys init` (the first keyring, once: the deploy workflow runs it before the
# services roll; it does nothing when a keyring is there) and `como-saga keys rotate` (an
# operator's command): the data keys' secret only, in Secrets Manager's four steps (a pending
# version, staged AWSPENDING, then promoted to AWSCURRENT). No service of its own and no task
# definition: both run as a one-off task of the orchestrator's task definition with this role
# in place of the orchestrator's (`aws ecs run-task --overrides` with `taskRoleArn` and the
# command; .github/workflows/deploy.yml), so that no long-running service can overwrite the
# keys. Connecting to the backend (`connect`) is all it needs besides.
data "aws_iam_policy_document" "keys" {
  source_policy_documents = [data.aws_iam_policy_document.connect.json]
  statement {
    sid = "write-and-rotate-the-data-keys"
    actions = [
      "secretsmanager:GetSecretValue",
      "secretsmanager:PutSecretValue",
      "secretsmanager:DescribeSecret",
      "secretsmanager:UpdateSecretVersionStage",
    ]
    resources = [var.secret_arns["data-keys"]]
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

# The execution role: pull the image, write each role's logs, and put the service credentials
# into the containers' environment.
data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "registry-sign-in"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
    #checkov:skip=CKV_AWS_356:ecr:GetAuthorizationToken has no resource to scope it to; the image pulls are scoped to the repository below
  }
  statement {
    sid       = "pull-the-image"
    actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
    resources = [aws_ecr_repository.como.arn]
  }
  statement {
    sid       = "write-logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [for group in values(var.log_groups) : "${group.arn}:*"]
  }
  statement {
    sid     = "service-credentials"
    actions = ["secretsmanager:GetSecretValue"]
    resources = [
      var.secret_arns["memberson-credentials"],
      var.secret_arns["sevenrooms-credentials"],
    ]
  }
  statement {
    sid       = "decrypt-the-credentials-and-the-image"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values = [
        "secretsmanager.${local.region}.amazonaws.com",
        "ecr.${local.region}.amazonaws.com",
      ]
    }
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

# EventBridge Scheduler's role: run the rotation task, hand it its roles, read its encrypted
# schedule.
data "aws_iam_policy_document" "scheduler_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
  }
}

data "aws_iam_policy_document" "scheduler" {
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
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }
  statement {
    sid       = "read-the-encrypted-schedule"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
  }
}

resource "aws_iam_role" "scheduler" {
  name               = "${var.prefix}-scheduler"
  assume_role_policy = data.aws_iam_policy_document.scheduler_assume.json
}

resource "aws_iam_role_policy" "scheduler" {
  name   = "${var.prefix}-scheduler"
  role   = aws_iam_role.scheduler.id
  policy = data.aws_iam_policy_document.scheduler.json
}
