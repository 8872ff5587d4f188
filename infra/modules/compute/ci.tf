# The role GitHub Actions assumes (OIDC, no stored keys) to deploy: push the image to this
# repository, register task definition revisions of the deployment's families, run
# `como-saga keys init` once per deployment (a one-off task of the orchestrator's task
# definition under the `keys` task role: the first keyring, or nothing if there is one), and
# roll the services. Only the workflow runs of pushes to var.github_branch of the repository may
# assume it.

resource "aws_iam_openid_connect_provider" "github" {
  count           = var.create_github_oidc_provider ? 1 : 0
  url             = "https://token.actions.githubusercontent.com"
  client_id_list  = ["sts.amazonaws.com"]
  thumbprint_list = ["6938fd4d98bab03faadb97b34396831e3780aea1", "1c58a3a8518e8759bf075b76b750d4f2df264fcd"]
}

data "aws_iam_policy_document" "deploy_assume" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${local.account}:oidc-provider/token.actions.githubusercontent.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "token.actions.githubusercontent.com:aud"
      values   = ["sts.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "token.actions.githubusercontent.com:sub"
      values   = ["repo:${var.github_owner}/${var.github_repository}:ref:refs/heads/${var.github_branch}"]
    }
  }
}

data "aws_iam_policy_document" "deploy" {
  statement {
    sid       = "registry-sign-in"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
    #checkov:skip=CKV_AWS_356:ecr:GetAuthorizationToken has no resource to scope it to; pushes are scoped to the repository below
  }
  statement {
    sid = "push-the-image"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:CompleteLayerUpload",
      "ecr:GetDownloadUrlForLayer",
      "ecr:InitiateLayerUpload",
      "ecr:PutImage",
      "ecr:UploadLayerPart",
    ]
    resources = [aws_ecr_repository.como.arn]
  }
  statement {
    sid       = "encrypt-the-image"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [var.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["ecr.${local.region}.amazonaws.com"]
    }
  }
  statement {
    sid       = "read-and-register-task-definitions"
    actions   = ["ecs:DescribeTaskDefinition", "ecs:RegisterTaskDefinition"]
    resources = ["*"]
    #checkov:skip=CKV_AWS_356:ecs:DescribeTaskDefinition and ecs:RegisterTaskDefinition take no resource; what runs is decided by the UpdateService and PassRole statements below
  }
  statement {
    sid       = "roll-the-services"
    actions   = ["ecs:UpdateService", "ecs:DescribeServices"]
    resources = [for role in keys(local.services) : "arn:${data.aws_partition.current.partition}:ecs:${local.region}:${local.account}:service/${var.prefix}/${var.prefix}-${role}"]
  }
  # `keys init` before the services roll (.github/workflows/deploy.yml): the orchestrator's
  # family only (any revision: the workflow registers the new image's first), in this cluster
  # only; then wait for it to stop and read its exit code. Its network configuration is the
  # orchestrator service's (DescribeServices, above).
  statement {
    sid       = "run-keys-init"
    actions   = ["ecs:RunTask"]
    resources = [aws_ecs_task_definition.role["orchestrator"].arn_without_revision, "${aws_ecs_task_definition.role["orchestrator"].arn_without_revision}:*"]
    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [aws_ecs_cluster.como.arn]
    }
  }
  statement {
    sid       = "wait-for-keys-init"
    actions   = ["ecs:DescribeTasks"]
    resources = ["arn:${data.aws_partition.current.partition}:ecs:${local.region}:${local.account}:task/${aws_ecs_cluster.como.name}/*"]
  }
  statement {
    sid       = "hand-the-tasks-their-roles"
    actions   = ["iam:PassRole"]
    resources = concat([aws_iam_role.execution.arn], [for role in aws_iam_role.task : role.arn])
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "deploy" {
  name               = "${var.prefix}-deploy"
  assume_role_policy = data.aws_iam_policy_document.deploy_assume.json
}

resource "aws_iam_role_policy" "deploy" {
  name   = "${var.prefix}-deploy"
  role   = aws_iam_role.deploy.id
  policy = data.aws_iam_policy_document.deploy.json
}
