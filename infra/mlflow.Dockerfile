# The MLflow tracking server of infra/compose.yaml: the official image holds core MLflow only,
# so add the Postgres driver (backend store) and boto3 (artifacts proxied to MinIO).
# (ghcr.io/mlflow/mlflow:v3.17.2-full ships both, with much more, if you prefer no build.)
FROM ghcr.io/mlflow/mlflow:v3.17.2
RUN pip install --no-cache-dir "psycopg2-binary>=2.9,<3" "boto3==1.43.117"
