# bench_store: PgStore recovery time (load() of 10,000 KMs / 20,000 links / 100,000 ledger rows)
# and ledger write throughput, against a private PostgreSQL (scripts/pg-private.sh) or
# QKDN_BENCH_PG_DSN. A plain program: run it and read the printed figures.
add_executable(bench_store store_bench.cpp)
target_compile_definitions(bench_store PRIVATE
  QKDN_PG_PRIVATE_SCRIPT="${CMAKE_SOURCE_DIR}/scripts/pg-private.sh")
target_link_libraries(bench_store PRIVATE qkdn_db PkgConfig::PQXX qkdn_options)
