variable "name" {
  description = "Prefix for resource names."
  type        = string
}

variable "vpc_id" {
  description = "The VPC the groups belong to."
  type        = string
}

variable "alb_ingress_cidrs" {
  description = "IPv4 ranges allowed to reach the load balancer on 443 (and 80, which only redirects)."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = alltrue([for cidr in var.alb_ingress_cidrs : can(cidrhost(cidr, 0))])
    error_message = "alb_ingress_cidrs must be IPv4 CIDR ranges."
  }
}

variable "api_port" {
  description = "The port slipway-api listens on, on the manager nodes (SLIPWAY_BIND)."
  type        = number
  default     = 8080
}

variable "db_port" {
  description = "PostgreSQL's port."
  type        = number
  default     = 5432
}

variable "node_egress_ports" {
  description = "TCP ports the nodes (and the functions on them) may reach on the internet."
  type        = list(number)
  default     = [80, 443]
}
