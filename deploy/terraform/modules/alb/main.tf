# The public entry point: an internet-facing ALB in the public subnets, TLS terminated here
# with a modern policy, HTTP answered only with a redirect, access logs to the log bucket,
# and one target group: slipway-api on the nodes that run it.

resource "aws_lb" "this" {
  # checkov:skip=CKV2_AWS_76:No web ACL is attached by default (its managed body-size rule would reject archive uploads). A web ACL given in var.web_acl_arn should include AWSManagedRulesKnownBadInputsRuleSet (Log4j), since functions behind the proxy may run Java.
  # No WAF in front by default: the AWS managed common rule set's body-size rule (8 KB) would
  # reject every deploy (archives up to SLIPWAY_MAX_ARCHIVE_BYTES, 50 MiB), and Slipway
  # authenticates and signs requests itself. Attach a tuned web ACL with var.web_acl_arn.
  name               = substr(var.name, 0, 32)
  internal           = false
  load_balancer_type = "application"
  security_groups    = [var.security_group_id]
  subnets            = var.public_subnet_ids

  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection
  enable_http2               = true
  # Build logs stream as server-sent events (GET …/logs?follow=true); a silent build must not
  # cut them off too soon (the client resumes with Last-Event-ID when it does).
  idle_timeout               = var.idle_timeout
  desync_mitigation_mode     = "defensive"
  xff_header_processing_mode = "append"

  access_logs {
    bucket  = var.access_logs_bucket
    prefix  = var.access_logs_prefix
    enabled = true
  }

  tags = { Name = var.name }
}

resource "aws_wafv2_web_acl_association" "this" {
  count = var.web_acl_arn == null ? 0 : 1

  resource_arn = aws_lb.this.arn
  web_acl_arn  = var.web_acl_arn
}

resource "aws_lb_target_group" "api" {
  # Plain HTTP to the targets: TLS ends at the load balancer, and slipway-api has no TLS
  # listener; its port admits only the load balancer's security group, inside the VPC.
  name_prefix          = "api-"
  port                 = var.api_port
  protocol             = "HTTP"
  protocol_version     = "HTTP1"
  vpc_id               = var.vpc_id
  target_type          = "instance"
  deregistration_delay = 30

  health_check {
    enabled             = true
    path                = "/healthz"
    matcher             = "200"
    protocol            = "HTTP"
    interval            = 15
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  tags = { Name = "${var.name}-api" }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = var.ssl_policy
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.api.arn
  }
}

resource "aws_lb_listener" "http_redirect" {
  load_balancer_arn = aws_lb.this.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = "redirect"

    redirect {
      port        = "443"
      protocol    = "HTTPS"
      status_code = "HTTP_301"
    }
  }
}
