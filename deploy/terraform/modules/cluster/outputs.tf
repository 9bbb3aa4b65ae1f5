output "manager_asg_name" {
  description = "The managers' auto-scaling group."
  value       = aws_autoscaling_group.node["manager"].name
}

output "worker_asg_name" {
  description = "The workers' auto-scaling group."
  value       = aws_autoscaling_group.node["worker"].name
}

output "launch_template_ids" {
  description = "Launch templates by node role."
  value       = { for role, template in aws_launch_template.node : role => template.id }
}

output "ami_id" {
  description = "The AMI the nodes boot."
  value       = local.ami_id
}

output "manager_instance_ids" {
  description = "Running managers at apply time (aws ssm start-session --target <id>)."
  value       = data.aws_instances.managers.ids
}

output "manager_private_ips" {
  description = "Private addresses of the running managers at apply time."
  value       = data.aws_instances.managers.private_ips
}

output "join_token_parameter_names" {
  description = "SSM parameters holding the join tokens (SecureString; names only)."
  value       = { for role, parameter in aws_ssm_parameter.join_token : role => parameter.name }
}

output "bootstrap_parameter_name" {
  description = "The parameter the first manager creates to claim the bootstrap (outside Terraform's state: delete it after a destroy)."
  value       = local.bootstrap_parameter
}

output "services_log_group_name" {
  description = "Log group for the services (awslogs-group in the stack)."
  value       = aws_cloudwatch_log_group.services.name
}

output "services_log_group_arn" {
  description = "ARN of the services' log group."
  value       = aws_cloudwatch_log_group.services.arn
}
