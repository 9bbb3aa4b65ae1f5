output "bucket_name" {
  description = "The log bucket's name (available once its policy admits the log producers)."
  value       = aws_s3_bucket.this.bucket
  depends_on  = [aws_s3_bucket_policy.this]
}

output "bucket_arn" {
  description = "The log bucket's ARN (available once its policy admits the log producers)."
  value       = aws_s3_bucket.this.arn
  depends_on  = [aws_s3_bucket_policy.this]
}

output "alb_prefix" {
  description = "Prefix of the load balancer's access logs."
  value       = var.alb_prefix
}

output "s3_access_prefix" {
  description = "Prefix of S3 server access logs."
  value       = var.s3_access_prefix
}

output "flow_logs_prefix" {
  description = "Prefix of VPC flow logs."
  value       = var.flow_logs_prefix
}

output "policy_id" {
  description = "The bucket policy's id (depend on it before pointing a log producer here)."
  value       = aws_s3_bucket_policy.this.id
}
