# The one public entry: an Application Load Balancer in the public subnets of every zone, HTTPS
# only (HTTP answers with a redirect), forwarding to the API's tasks in the private subnets.
# The API answers plain HTTP on its port (it has no TLS listener of its own): that hop stays
# inside the VPC, between the load balancer's and the tasks' security groups.

resource "aws_security_group" "alb" {
  #checkov:skip=CKV_AWS_260:port 80 is open only to answer with a redirect to HTTPS; nothing is served on it
  name        = "${var.prefix}-alb"
  description = "Load balancer: HTTPS (and HTTP, redirected) from anywhere; to the API's port in the VPC"
  vpc_id      = var.vpc_id
  ingress {
    description = "HTTPS from clients"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
  ingress {
    description = "HTTP from clients, redirected to HTTPS"
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
  egress {
    description = "To the API's tasks"
    from_port   = var.api_port
    to_port     = var.api_port
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr_block]
  }
}

resource "aws_lb" "api" {
  #checkov:skip=CKV2_AWS_76:Log4j and other known bad inputs are blocked by AWSManagedRulesKnownBadInputsRuleSet (waf.tf); the check also demands AWSManagedRulesAnonymousIpList, which would block operators who work through a VPN or a hosting provider
  #checkov:skip=CKV_AWS_91:every request through the load balancer is logged by the firewall (waf.tf: client, URI, headers but the token, verdict) to CloudWatch Logs under the deployment's key; access logs would record the same requests again in an S3 bucket of their own
  name                       = var.prefix
  load_balancer_type         = "application"
  internal                   = false
  security_groups            = [aws_security_group.alb.id]
  subnets                    = var.public_subnet_ids
  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection
  desync_mitigation_mode     = "strictest"
}

resource "aws_lb_target_group" "api" {
  #checkov:skip=CKV_AWS_378:the API serves plain HTTP only; this hop runs inside the VPC from the load balancer's security group to the tasks' and never leaves AWS's network
  name                 = "${var.prefix}-api"
  port                 = var.api_port
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = 30
  # Alive: GET /healthz (unauthenticated). Not /readyz: a readiness check counts every saga in
  # the table (a COUNT over the status index, about one read unit per 38 sagas), and the load
  # balancer checks each task from each zone every 30 s: with the 300,000 sagas a month of
  # docs/DEPLOY.md's load that is about $390 a month of DynamoDB reads.
  health_check {
    path                = "/healthz"
    matcher             = "200"
    interval            = 30
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.api.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.api.arn
  }
}

resource "aws_lb_listener" "http_redirect" {
  load_balancer_arn = aws_lb.api.arn
  port              = 80
  protocol          = "HTTP"
  default_action {
    type = "redirect"
    redirect {
      protocol    = "HTTPS"
      port        = "443"
      status_code = "HTTP_301"
    }
  }
}

resource "aws_route53_record" "api" {
  count   = var.route53_zone_id == "" ? 0 : 1
  zone_id = var.route53_zone_id
  name    = var.api_domain_name
  type    = "A"
  alias {
    name                   = aws_lb.api.dns_name
    zone_id                = aws_lb.api.zone_id
    evaluate_target_health = true
  }
}
