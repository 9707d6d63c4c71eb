# postgis/postgis:15-3.3 as CI builds it: Debian's PostGIS package on the local postgres:15.
FROM postgres:15
RUN apt-get update && apt-get install -y --no-install-recommends postgresql-15-postgis-3 \
 && rm -rf /var/lib/apt/lists/*
