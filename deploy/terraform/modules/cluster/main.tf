# The swarm: a managers ASG and a workers ASG of Docker hosts (Amazon Linux 2023). Each
# node's user-data (templates/user-data.sh.tftpl) installs the function firewall
# (templates/function-firewall.sh.tftpl) before dockerd can start, installs the engine, and
# initialises or joins the swarm with the join tokens kept in SSM Parameter Store.
#
# Every launch template requires IMDSv2 with a hop limit of 1: a container on a bridge is one
# hop further than the node, so its metadata responses die on the way and function
# containers cannot obtain the node's credentials (the firewall drops 169.254.0.0/16 from
# function bridges as well). Slipway's own services run with host networking, in the node's
# namespace, and assume their duty roles with the node's credentials (modules/iam).

data "aws_ami" "al2023" {
  count = var.ami_id == null ? 1 : 0

  most_recent = true
  owners      = ["amazon"]

  filter {
    name   = "name"
    values = ["al2023-ami-2023.*-kernel-*-${var.architecture}"]
  }

  filter {
    name   = "architecture"
    values = [var.architecture]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }

  filter {
    name   = "root-device-type"
    values = ["ebs"]
  }
}

data "aws_region" "current" {}

# A new id whenever the cluster is created anew, so a new cluster never sees the bootstrap
# claim a destroyed one left behind in SSM.
resource "terraform_data" "swarm_generation" {}

locals {
  ami_id = var.ami_id != null ? var.ami_id : data.aws_ami.al2023[0].id

  token_placeholder   = "pending-swarm-bootstrap"
  bootstrap_parameter = "${var.bootstrap_parameter_prefix}${substr(terraform_data.swarm_generation.id, 0, 8)}"

  groups = {
    manager = {
      instance_type        = var.manager_instance_type
      count                = var.manager_count
      volume_size          = var.manager_volume_size
      instance_profile_arn = var.manager_instance_profile_arn
    }
    worker = {
      instance_type        = var.worker_instance_type
      count                = var.worker_count
      volume_size          = var.worker_volume_size
      instance_profile_arn = var.worker_instance_profile_arn
    }
  }

  # Never reachable by a function under egress "public": RFC 6890 special-purpose ranges
  # (private, shared, loopback, link-local, benchmarking, multicast, reserved) and the VPC.
  closed_cidrs = distinct(concat([
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4",
    "240.0.0.0/4",
  ], [var.vpc_cidr]))

  function_firewall = templatefile("${path.module}/templates/function-firewall.sh.tftpl", {
    bridges               = var.function_bridges
    egress                = var.function_egress
    egress_allow_cidrs    = var.function_egress_allow_cidrs
    closed_cidrs          = local.closed_cidrs
    database_cidrs        = var.database_cidrs
    database_port         = var.database_port
    function_address_pool = var.function_address_pool
    dns_resolvers         = [cidrhost(var.vpc_cidr, 2)]
  })

  user_data = { for role in keys(local.groups) : role => base64gzip(templatefile("${path.module}/templates/user-data.sh.tftpl", {
    role                    = role
    cluster                 = var.name
    region                  = data.aws_region.current.name
    manager_token_parameter = var.manager_token_parameter_name
    worker_token_parameter  = var.worker_token_parameter_name
    bootstrap_parameter     = local.bootstrap_parameter
    token_placeholder       = local.token_placeholder
    kms_key_arn             = var.kms_key_arn
    swarm_address_pool      = var.swarm_address_pool
    function_address_pool   = var.function_address_pool
    function_firewall       = local.function_firewall
    service_role_arns       = var.service_role_arns
  })) }
}

resource "aws_ssm_parameter" "join_token" {
  for_each = {
    manager = var.manager_token_parameter_name
    worker  = var.worker_token_parameter_name
  }

  name        = each.value
  description = "Swarm ${each.key} join token of ${var.name}; written by the first manager at boot"
  type        = "SecureString"
  key_id      = var.kms_key_arn
  # A placeholder until the first manager has initialised the swarm and written the real
  # token; Terraform never learns the token.
  value = local.token_placeholder

  lifecycle {
    ignore_changes = [value]
  }
}

resource "aws_cloudwatch_log_group" "services" {
  name              = var.services_log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

resource "aws_launch_template" "node" {
  for_each = local.groups

  name_prefix            = "${var.name}-${each.key}-"
  description            = "Swarm ${each.key} node of ${var.name}"
  image_id               = local.ami_id
  instance_type          = each.value.instance_type
  update_default_version = true
  ebs_optimized          = true

  iam_instance_profile {
    arn = each.value.instance_profile_arn
  }

  vpc_security_group_ids = [var.security_group_id]

  # IMDSv2 only, and one hop: containers on bridges cannot read the node's credentials.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    http_protocol_ipv6          = "disabled"
    instance_metadata_tags      = "disabled"
  }

  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_size           = each.value.volume_size
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  monitoring {
    enabled = true
  }

  # Gzipped (cloud-init unpacks it): EC2 takes at most 16 KB of user data.
  user_data = local.user_data[each.key]

  tag_specifications {
    resource_type = "volume"
    tags          = merge(var.tags, { Name = "${var.name}-${each.key}" })
  }

  tags = { Name = "${var.name}-${each.key}" }

  lifecycle {
    precondition {
      # 16 KB once base64-decoded.
      condition     = length(local.user_data[each.key]) <= 21848
      error_message = "The ${each.key} user data is over EC2's 16 KB limit, even gzipped."
    }
  }
}

resource "aws_autoscaling_group" "node" {
  for_each = local.groups

  name                = "${var.name}-${each.key}s"
  vpc_zone_identifier = var.subnet_ids
  min_size            = each.value.count
  max_size            = each.value.count + (each.key == "worker" ? var.worker_max_extra : 0)
  desired_capacity    = each.value.count
  # EC2 status only: the load balancer's health check fails until the stack is deployed, and
  # an ASG replacing managers for that would destroy the swarm's quorum.
  health_check_type         = "EC2"
  health_check_grace_period = 300
  target_group_arns         = each.key == var.api_node_group ? var.api_target_group_arns : []
  # Replacing nodes is left to people (and the reaper on the managers): an automatic
  # instance refresh of the managers could take the quorum down with it.
  default_instance_warmup = 300

  launch_template {
    id      = aws_launch_template.node[each.key].id
    version = aws_launch_template.node[each.key].latest_version
  }

  dynamic "tag" {
    for_each = merge(var.tags, {
      Name                 = "${var.name}-${each.key}"
      "slipway:cluster"    = var.name
      "slipway:swarm-role" = each.key
    })

    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  depends_on = [aws_ssm_parameter.join_token]
}

# Where the managers are, for operators and the stack deploy (Session Manager targets).
# Read after the groups exist; instances still booting may be missing on the first apply.
data "aws_instances" "managers" {
  instance_tags = {
    "slipway:cluster"    = var.name
    "slipway:swarm-role" = "manager"
  }
  instance_state_names = ["running"]

  depends_on = [aws_autoscaling_group.node]
}
