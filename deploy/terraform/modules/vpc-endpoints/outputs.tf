output "s3_endpoint_id" {
  description = "The S3 gateway endpoint's id."
  value       = aws_vpc_endpoint.s3.id
}

output "interface_endpoint_ids" {
  description = "Interface endpoint ids by service."
  value       = { for service, endpoint in aws_vpc_endpoint.interface : service => endpoint.id }
}

output "security_group_id" {
  description = "The interface endpoints' security group (null without interface endpoints)."
  value       = try(aws_security_group.endpoints[0].id, null)
}
