output "dns_name" {
  description = "The load balancer's DNS name (point the API's host name here)."
  value       = aws_lb.this.dns_name
}

output "zone_id" {
  description = "The load balancer's hosted zone, for a Route 53 alias."
  value       = aws_lb.this.zone_id
}

output "arn" {
  description = "The load balancer's ARN."
  value       = aws_lb.this.arn
}

output "api_target_group_arn" {
  description = "Target group of slipway-api (the nodes running it are registered by their ASG)."
  value       = aws_lb_target_group.api.arn
}

output "https_listener_arn" {
  description = "The HTTPS listener."
  value       = aws_lb_listener.https.arn
}
