output "vpc_id" {
  description = "The VPC's id."
  value       = aws_vpc.this.id
}

output "vpc_cidr" {
  description = "The VPC's IPv4 range (the host firewall keeps function containers out of it)."
  value       = aws_vpc.this.cidr_block
}

output "azs" {
  description = "The availability zones the subnets are in, in subnet order."
  value       = local.azs
}

output "public_subnet_ids" {
  description = "Public subnets: the load balancer and NAT gateways only."
  value       = aws_subnet.public[*].id
}

output "private_subnet_ids" {
  description = "Private subnets for the swarm nodes and the interface endpoints."
  value       = aws_subnet.private[*].id
}

output "private_subnet_cidrs" {
  description = "The private subnets' ranges."
  value       = aws_subnet.private[*].cidr_block
}

output "database_subnet_ids" {
  description = "Subnets for RDS, with no route out of the VPC."
  value       = aws_subnet.database[*].id
}

output "database_subnet_cidrs" {
  description = "The database subnets' ranges."
  value       = aws_subnet.database[*].cidr_block
}

output "private_route_table_ids" {
  description = "Route tables of the private subnets (for gateway endpoints)."
  value       = aws_route_table.private[*].id
}

output "nat_public_ips" {
  description = "The addresses the nodes' internet traffic leaves from (to allow-list Slipway at git hosts, registries, …)."
  value       = aws_eip.nat[*].public_ip
}
