# The image repository: tags are immutable (each push is a commit's image; a deployment names
# exactly what it runs), images are scanned on push and encrypted with the deployment's key,
# and only the last 30 are kept.
resource "aws_ecr_repository" "como" {
  name                 = var.prefix
  image_tag_mutability = "IMMUTABLE"
  image_scanning_configuration {
    scan_on_push = true
  }
  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = var.kms_key_arn
  }
}

resource "aws_ecr_lifecycle_policy" "como" {
  repository = aws_ecr_repository.como.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Keep the last 30 images"
      selection = {
        tagStatus   = "any"
        countType   = "imageCountMoreThan"
        countNumber = 30
      }
      action = { type = "expire" }
    }]
  })
}
