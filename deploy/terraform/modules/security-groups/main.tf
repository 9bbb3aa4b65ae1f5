# The three security groups and every rule between them, in one place so the whole traffic
# matrix can be read (and checked by tests/invariants.py) at once:
#
#   internet ──443/80──▶ alb ──api_port──▶ nodes ──5432──▶ database
#                                           nodes ◀──swarm ports──▶ nodes
#
# There is deliberately no security group for function containers: they run on the nodes,
# behind the node's own network interface, so AWS cannot tell their packets from the
# node's. The host firewall in modules/cluster/templates/function-firewall.sh.tftpl does
# that. The database group therefore admits the nodes' group and nothing else — never a
# CIDR, never the VPC range.

locals {
  # Swarm's own ports: cluster management, node gossip (TCP and UDP), the overlay's VXLAN.
  swarm_ports = {
    "swarm-management-tcp" = { protocol = "tcp", port = 2377, what = "swarm cluster management" }
    "swarm-gossip-tcp"     = { protocol = "tcp", port = 7946, what = "swarm node gossip (TCP)" }
    "swarm-gossip-udp"     = { protocol = "udp", port = 7946, what = "swarm node gossip (UDP)" }
    "swarm-overlay-udp"    = { protocol = "udp", port = 4789, what = "swarm overlay network (VXLAN)" }
  }
}

resource "aws_security_group" "alb" {
  # checkov:skip=CKV2_AWS_5:Attached to the load balancer (modules/alb) through this module's outputs; checkov's graph does not follow module outputs across modules.
  name_prefix = "${var.name}-alb-"
  description = "Load balancer of ${var.name}: HTTPS and the HTTP redirect from the allowed ranges"
  vpc_id      = var.vpc_id

  tags = { Name = "${var.name}-alb" }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "nodes" {
  # checkov:skip=CKV2_AWS_5:Attached to both launch templates (modules/cluster) through this module's outputs; checkov's graph does not follow module outputs across modules.
  name_prefix = "${var.name}-nodes-"
  description = "Swarm nodes of ${var.name}: the API from the load balancer, swarm traffic between nodes"
  vpc_id      = var.vpc_id

  tags = { Name = "${var.name}-nodes" }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "database" {
  # checkov:skip=CKV2_AWS_5:Attached to the DB instance (modules/rds) through this module's outputs; checkov's graph does not follow module outputs across modules.
  name_prefix = "${var.name}-db-"
  description = "PostgreSQL of ${var.name}: port ${var.db_port} from the swarm nodes only"
  vpc_id      = var.vpc_id

  tags = { Name = "${var.name}-db" }

  lifecycle {
    create_before_destroy = true
  }
}

# --- load balancer ----------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  for_each = toset(var.alb_ingress_cidrs)

  security_group_id = aws_security_group.alb.id
  description       = "HTTPS to the Slipway API from ${each.value}"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "alb_http" {
  # checkov:skip=CKV_AWS_260:Port 80 only reaches the listener that answers 301 to HTTPS (modules/alb); no request is forwarded over plain HTTP.
  for_each = toset(var.alb_ingress_cidrs)

  security_group_id = aws_security_group.alb.id
  description       = "HTTP from ${each.value}, answered only with a redirect to HTTPS"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "alb_to_api" {
  security_group_id            = aws_security_group.alb.id
  description                  = "Forward API requests and health checks to the nodes"
  ip_protocol                  = "tcp"
  from_port                    = var.api_port
  to_port                      = var.api_port
  referenced_security_group_id = aws_security_group.nodes.id
}

# --- nodes ------------------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "nodes_api_from_alb" {
  security_group_id            = aws_security_group.nodes.id
  description                  = "Slipway API (port ${var.api_port}) from the load balancer only"
  ip_protocol                  = "tcp"
  from_port                    = var.api_port
  to_port                      = var.api_port
  referenced_security_group_id = aws_security_group.alb.id
}

resource "aws_vpc_security_group_ingress_rule" "nodes_swarm" {
  for_each = local.swarm_ports

  security_group_id            = aws_security_group.nodes.id
  description                  = "${each.value.what} from the other nodes only"
  ip_protocol                  = each.value.protocol
  from_port                    = each.value.port
  to_port                      = each.value.port
  referenced_security_group_id = aws_security_group.nodes.id
}

resource "aws_vpc_security_group_egress_rule" "nodes_swarm" {
  for_each = local.swarm_ports

  security_group_id            = aws_security_group.nodes.id
  description                  = "${each.value.what} to the other nodes only"
  ip_protocol                  = each.value.protocol
  from_port                    = each.value.port
  to_port                      = each.value.port
  referenced_security_group_id = aws_security_group.nodes.id
}

resource "aws_vpc_security_group_egress_rule" "nodes_database" {
  security_group_id            = aws_security_group.nodes.id
  description                  = "PostgreSQL on RDS"
  ip_protocol                  = "tcp"
  from_port                    = var.db_port
  to_port                      = var.db_port
  referenced_security_group_id = aws_security_group.database.id
}

resource "aws_vpc_security_group_egress_rule" "nodes_internet" {
  for_each = toset([for port in var.node_egress_ports : tostring(port)])

  security_group_id = aws_security_group.nodes.id
  description       = "TCP ${each.value} out (AWS APIs and endpoints, package and image registries, git hosts, functions' own calls)"
  ip_protocol       = "tcp"
  from_port         = tonumber(each.value)
  to_port           = tonumber(each.value)
  cidr_ipv4         = "0.0.0.0/0"
}

# --- database ---------------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "database_from_nodes" {
  security_group_id            = aws_security_group.database.id
  description                  = "PostgreSQL from the swarm nodes' security group only (function containers are stopped by the host firewall)"
  ip_protocol                  = "tcp"
  from_port                    = var.db_port
  to_port                      = var.db_port
  referenced_security_group_id = aws_security_group.nodes.id
}
