output "data_bucket" {
  value = aws_s3_bucket.data.id
}

output "artifacts_bucket" {
  value = aws_s3_bucket.artifacts.id
}

output "ecr_repository_url" {
  value = aws_ecr_repository.app.repository_url
}

output "endpoint_name" {
  value = aws_sagemaker_endpoint.classifier.name
}

output "predict_url" {
  value = "${aws_api_gateway_stage.v1.invoke_url}/predict"
}

output "api_key" {
  value     = aws_api_gateway_api_key.client.value
  sensitive = true
}
