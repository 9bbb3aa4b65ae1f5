output "alb_security_group_id" {
  description = "The load balancer's security group."
  value       = aws_security_group.alb.id
}

output "nodes_security_group_id" {
  description = "The swarm nodes' security group."
  value       = aws_security_group.nodes.id
}

output "database_security_group_id" {
  description = "The database's security group."
  value       = aws_security_group.database.id
}
