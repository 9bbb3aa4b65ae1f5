output "manager_instance_profile_arn" {
  description = "Instance profile of the manager nodes."
  value       = aws_iam_instance_profile.node["manager"].arn
  # Nodes must not boot before their permissions exist: the join script needs them at once.
  depends_on = [aws_iam_role_policy.node]
}

output "worker_instance_profile_arn" {
  description = "Instance profile of the worker nodes."
  value       = aws_iam_instance_profile.node["worker"].arn
  # Nodes must not boot before their permissions exist: the join script needs them at once.
  depends_on = [aws_iam_role_policy.node]
}

output "manager_node_role_arn" {
  description = "Role of the manager nodes."
  value       = aws_iam_role.node["manager"].arn
}

output "worker_node_role_arn" {
  description = "Role of the worker nodes."
  value       = aws_iam_role.node["worker"].arn
}

output "api_role_arn" {
  description = "Role slipway-api assumes (role_arn of its AWS profile)."
  value       = aws_iam_role.duty["api"].arn
}

output "worker_role_arn" {
  description = "Role slipway-worker assumes (role_arn of its AWS profile)."
  value       = aws_iam_role.duty["worker"].arn
}

output "scheduler_role_arn" {
  description = "Role slipway-scheduler assumes (role_arn of its AWS profile)."
  value       = aws_iam_role.duty["scheduler"].arn
}
