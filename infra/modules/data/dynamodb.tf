# The one table: saga items, their history items and idempotency records (see
# backends/aws/src/store.rs for the key design), on demand, with the status and due indexes,
# TTL on finished sagas, point-in-time recovery, and the deployment's key.
resource "aws_dynamodb_table" "sagas" {
  name                        = local.table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "pk"
  range_key                   = "sk"
  deletion_protection_enabled = true

  attribute {
    name = "pk"
    type = "S"
  }
  attribute {
    name = "sk"
    type = "S"
  }
  attribute {
    name = "gs_pk"
    type = "S"
  }
  attribute {
    name = "gs_sk"
    type = "S"
  }
  attribute {
    name = "due_pk"
    type = "S"
  }
  attribute {
    name = "due_sk"
    type = "S"
  }

  global_secondary_index {
    name               = local.status_index
    hash_key           = "gs_pk"
    range_key          = "gs_sk"
    projection_type    = length(local.status_index_projection) == 0 ? "KEYS_ONLY" : "INCLUDE"
    non_key_attributes = length(local.status_index_projection) == 0 ? null : local.status_index_projection
  }

  global_secondary_index {
    name               = local.due_index
    hash_key           = "due_pk"
    range_key          = "due_sk"
    projection_type    = length(local.due_index_projection) == 0 ? "KEYS_ONLY" : "INCLUDE"
    non_key_attributes = length(local.due_index_projection) == 0 ? null : local.due_index_projection
  }

  ttl {
    attribute_name = local.ttl_attribute
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.como.arn
  }
}
