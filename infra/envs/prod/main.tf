# The modules, wired: the data (with the key) first, then the network, the edge, the compute
# and what watches them. Each module's own files say what it holds and why.

locals {
  # Every log group of the deployment, as the modules name them: the key lets CloudWatch Logs
  # encrypt these and no others.
  log_group_patterns = [
    "/ecs/${var.prefix}/*",
    "aws-waf-logs-${var.prefix}",
    "/aws/events/${var.prefix}/*",
    "/aws/vpc/${var.prefix}-flow-logs",
  ]
}

module "data" {
  source             = "../../modules/data"
  prefix             = var.prefix
  max_receives       = var.max_receives
  log_group_patterns = local.log_group_patterns
}

module "network" {
  source              = "../../modules/network"
  prefix              = var.prefix
  cidr_block          = var.vpc_cidr
  availability_zones  = var.availability_zones
  nat_gateways        = var.nat_gateways
  interface_endpoints = var.interface_endpoints
  kms_key_arn         = module.data.kms_key_arn
  log_retention_days  = var.log_retention_days
}

module "edge" {
  source                = "../../modules/edge"
  prefix                = var.prefix
  vpc_id                = module.network.vpc_id
  vpc_cidr_block        = module.network.vpc_cidr_block
  public_subnet_ids     = module.network.public_subnet_ids
  api_domain_name       = var.api_domain_name
  certificate_arn       = var.certificate_arn
  route53_zone_id       = var.route53_zone_id
  cognito_domain_prefix = var.cognito_domain_prefix
  user_pool_tier        = var.user_pool_tier
  waf_rate_limit        = var.waf_rate_limit
  waf_log_group_arn     = module.observability.waf_log_group_arn
  deletion_protection   = var.deletion_protection
}

module "compute" {
  source                  = "../../modules/compute"
  prefix                  = var.prefix
  image                   = var.image
  cpu_architecture        = var.cpu_architecture
  task_size               = var.task_size
  min_tasks               = var.min_tasks
  max_tasks               = var.max_tasks
  backlog_per_task        = var.backlog_per_task
  spot_above_floor        = var.spot_above_floor
  peak                    = var.peak
  vpc_id                  = module.network.vpc_id
  private_subnet_ids      = module.network.private_subnet_ids
  alb_security_group_id   = module.edge.alb_security_group_id
  target_group_arn        = module.edge.target_group_arn
  alb_arn_suffix          = module.edge.alb_arn_suffix
  target_group_arn_suffix = module.edge.target_group_arn_suffix
  kms_key_arn             = module.data.kms_key_arn
  queues                  = module.data.queues
  dead_letter_queues      = module.data.dead_letter_queues
  table_arn               = module.data.table_arn
  bus_arn                 = module.data.bus_arn
  secret_arns             = module.data.secret_arns
  log_groups              = module.observability.log_groups
  memberson_url           = var.memberson_url
  sevenrooms_url          = var.sevenrooms_url
  venues                  = var.venues
  deadline                = var.deadline
  dashboard_refresh       = var.dashboard_refresh
  rotation_schedule       = var.rotation_schedule
  rotation_test_member    = var.rotation_test_member
  github_owner            = var.github_owner
  github_repository       = var.github_repository
  # The API accepts exactly the tokens of the edge's user pool and dashboard client.
  api_auth = {
    jwks_url   = module.edge.jwks_url
    issuer     = module.edge.issuer
    audience   = module.edge.audience
    signin_url = module.edge.signin_url
  }
  create_github_oidc_provider = var.create_github_oidc_provider
}

module "observability" {
  source                  = "../../modules/observability"
  prefix                  = var.prefix
  kms_key_arn             = module.data.kms_key_arn
  log_retention_days      = var.log_retention_days
  queues                  = module.data.queues
  dead_letter_queues      = module.data.dead_letter_queues
  cluster_name            = module.compute.cluster_name
  cluster_arn             = module.compute.cluster_arn
  service_names           = module.compute.service_names
  heartbeat               = module.compute.heartbeat
  alb_arn_suffix          = module.edge.alb_arn_suffix
  target_group_arn_suffix = module.edge.target_group_arn_suffix
  web_acl_name            = module.edge.web_acl_name
  alarm_emails            = var.alarm_emails
}
