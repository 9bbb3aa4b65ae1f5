output "registry_host" {
  description = "<account>.dkr.ecr.<region>.amazonaws.com, for SLIPWAY_REGISTRY and docker login."
  value       = split("/", aws_ecr_repository.functions.repository_url)[0]
}

output "platform_repository_url" {
  description = "Where Slipway's own image is pushed."
  value       = aws_ecr_repository.platform.repository_url
}

output "platform_repository_arn" {
  description = "ARN of Slipway's own image repository."
  value       = aws_ecr_repository.platform.arn
}

output "functions_repository_url" {
  description = "The function image repository's URL."
  value       = aws_ecr_repository.functions.repository_url
}

output "functions_repository_name" {
  description = "The function image repository's name."
  value       = aws_ecr_repository.functions.name
}

output "function_repository_arns" {
  description = "What the worker may push to and pull from: the functions repository and every repository under its name."
  value       = [aws_ecr_repository.functions.arn, "${aws_ecr_repository.functions.arn}/*"]
}
