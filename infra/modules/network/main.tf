# Two zones (var.availability_zones), each with a public and a private subnet. Only the load balancer and
# the NAT gateway live in the public subnets; no subnet gives its instances public addresses.
#
# The ways out of the private subnets:
# - DynamoDB and S3 (where ECR keeps image layers) through gateway endpoints: free, and the
#   traffic never touches the NAT gateway;
# - the other AWS APIs (SQS, Secrets Manager, EventBridge, CloudWatch Logs, ECR's API) through
#   the NAT gateway by default: traffic from a VPC to a regional AWS endpoint stays on AWS's
#   network even over public addresses, and at this deployment's volume an interface endpoint
#   ($0.013 per zone-hour) costs more than the NAT data processing it saves (docs/DEPLOY.md);
#   var.interface_endpoints moves any of them onto interface endpoints;
# - Memberson and SevenRooms through the NAT gateway: one, or one per zone (var.nat_gateways).

# The zones named, as long as they are available: a name that is not fails the plan.
data "aws_availability_zones" "chosen" {
  state = "available"
  filter {
    name   = "zone-name"
    values = var.availability_zones
  }
}

locals {
  azs    = data.aws_availability_zones.chosen.names
  region = data.aws_region.current.name
  # The zones whose public subnet holds a NAT gateway.
  nat_azs = var.nat_gateways == "per-zone" ? local.azs : [local.azs[0]]
}

resource "aws_vpc" "main" {
  cidr_block           = var.cidr_block
  enable_dns_support   = true
  enable_dns_hostnames = true # interface endpoints' private DNS names need it
  tags                 = { Name = var.prefix }
}

# The default security group allows nothing, so that nothing lands in it by accident.
resource "aws_default_security_group" "default" {
  vpc_id = aws_vpc.main.id
}

resource "aws_internet_gateway" "main" {
  vpc_id = aws_vpc.main.id
  tags   = { Name = var.prefix }
}

resource "aws_subnet" "public" {
  for_each                = toset(local.azs)
  vpc_id                  = aws_vpc.main.id
  availability_zone       = each.value
  cidr_block              = cidrsubnet(var.cidr_block, 8, index(local.azs, each.value))
  map_public_ip_on_launch = false
  tags                    = { Name = "${var.prefix}-public-${each.value}", tier = "public" }
}

resource "aws_subnet" "private" {
  for_each          = toset(local.azs)
  vpc_id            = aws_vpc.main.id
  availability_zone = each.value
  cidr_block        = cidrsubnet(var.cidr_block, 8, 100 + index(local.azs, each.value))
  tags              = { Name = "${var.prefix}-private-${each.value}", tier = "private" }
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.main.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.main.id
  }
  tags = { Name = "${var.prefix}-public" }
}

resource "aws_route_table_association" "public" {
  for_each       = aws_subnet.public
  subnet_id      = each.value.id
  route_table_id = aws_route_table.public.id
}

resource "aws_eip" "nat" {
  #checkov:skip=CKV2_AWS_19:this address belongs to a NAT gateway, not an instance
  for_each = toset(local.nat_azs)
  domain   = "vpc"
  tags     = { Name = "${var.prefix}-nat-${each.value}" }
}

resource "aws_nat_gateway" "main" {
  for_each      = toset(local.nat_azs)
  allocation_id = aws_eip.nat[each.value].id
  subnet_id     = aws_subnet.public[each.value].id
  tags          = { Name = "${var.prefix}-${each.value}" }
  depends_on    = [aws_internet_gateway.main]
}

# Each private subnet leaves through its own zone's NAT gateway, or through the one.
resource "aws_route_table" "private" {
  for_each = toset(local.azs)
  vpc_id   = aws_vpc.main.id
  route {
    cidr_block     = "0.0.0.0/0"
    nat_gateway_id = aws_nat_gateway.main[contains(local.nat_azs, each.value) ? each.value : local.nat_azs[0]].id
  }
  tags = { Name = "${var.prefix}-private-${each.value}" }
}

resource "aws_route_table_association" "private" {
  for_each       = aws_subnet.private
  subnet_id      = each.value.id
  route_table_id = aws_route_table.private[each.key].id
}

# DynamoDB: the saga table's traffic stays off the NAT gateway, at no charge.
resource "aws_vpc_endpoint" "dynamodb" {
  vpc_id            = aws_vpc.main.id
  service_name      = "com.amazonaws.${local.region}.dynamodb"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [for rt in aws_route_table.private : rt.id]
  tags              = { Name = "${var.prefix}-dynamodb" }
}

# S3: only ECR's layer bucket (image pulls), nothing else of S3 is reachable through it.
resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.main.id
  service_name      = "com.amazonaws.${local.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [for rt in aws_route_table.private : rt.id]
  policy            = data.aws_iam_policy_document.s3_endpoint.json
  tags              = { Name = "${var.prefix}-s3" }
}

data "aws_iam_policy_document" "s3_endpoint" {
  statement {
    sid       = "ecr-image-layers-only"
    actions   = ["s3:GetObject"]
    resources = ["arn:${data.aws_partition.current.partition}:s3:::prod-${local.region}-starport-layer-bucket/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
  }
}

# Interface endpoints for the services named in var.interface_endpoints (none by default).
resource "aws_security_group" "endpoints" {
  count       = length(var.interface_endpoints) > 0 ? 1 : 0
  name        = "${var.prefix}-endpoints"
  description = "Interface endpoints: HTTPS from inside the VPC"
  vpc_id      = aws_vpc.main.id
  ingress {
    description = "HTTPS from the VPC"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = [var.cidr_block]
  }
}

resource "aws_vpc_endpoint" "interface" {
  for_each            = toset(var.interface_endpoints)
  vpc_id              = aws_vpc.main.id
  service_name        = "com.amazonaws.${local.region}.${each.value}"
  vpc_endpoint_type   = "Interface"
  private_dns_enabled = true
  subnet_ids          = [for az in local.azs : aws_subnet.private[az].id]
  security_group_ids  = [aws_security_group.endpoints[0].id]
  tags                = { Name = "${var.prefix}-${each.value}" }
}

# Flow logs of rejected traffic: what was refused, and from where. Accepted flows are not
# logged: at this deployment's size they would cost more than they tell.
resource "aws_flow_log" "rejected" {
  vpc_id          = aws_vpc.main.id
  traffic_type    = "REJECT"
  log_destination = aws_cloudwatch_log_group.flow.arn
  iam_role_arn    = aws_iam_role.flow.arn
}

resource "aws_cloudwatch_log_group" "flow" {
  name              = "/aws/vpc/${var.prefix}-flow-logs"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

data "aws_iam_policy_document" "flow_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "flow" {
  statement {
    sid       = "write-the-flow-log-group"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.flow.arn}:*"]
  }
}

resource "aws_iam_role" "flow" {
  name               = "${var.prefix}-flow-logs"
  assume_role_policy = data.aws_iam_policy_document.flow_assume.json
}

resource "aws_iam_role_policy" "flow" {
  name   = "${var.prefix}-flow-logs"
  role   = aws_iam_role.flow.id
  policy = data.aws_iam_policy_document.flow.json
}
