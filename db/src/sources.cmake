# db: the PostgreSQL Store (libpqxx) with its SQL migrations, and the database thread pool.
# Included from db/CMakeLists.txt. Migrations are listed explicitly (never globbed) and compiled
# into the library by cmake/embed_migrations.cmake.
set(QKDN_DB_MIGRATIONS
  ${CMAKE_CURRENT_SOURCE_DIR}/migrations/0001_initial.sql
  ${CMAKE_CURRENT_SOURCE_DIR}/migrations/0002_thresholds.sql
  ${CMAKE_CURRENT_SOURCE_DIR}/migrations/0003_km_coordinates.sql
  ${CMAKE_CURRENT_SOURCE_DIR}/migrations/0004_ledger_release_before_allocation.sql
  ${CMAKE_CURRENT_SOURCE_DIR}/migrations/0005_controller_epoch.sql
  ${CMAKE_CURRENT_SOURCE_DIR}/migrations/0006_trust.sql
  ${CMAKE_CURRENT_SOURCE_DIR}/migrations/0007_link_weight.sql
  ${CMAKE_CURRENT_SOURCE_DIR}/migrations/0008_leadership.sql
  ${CMAKE_CURRENT_SOURCE_DIR}/migrations/0009_interworking.sql
)
set(QKDN_DB_MIGRATIONS_CPP ${CMAKE_CURRENT_BINARY_DIR}/generated/migrations.cpp)
string(REPLACE ";" "|" _qkdn_db_inputs "${QKDN_DB_MIGRATIONS}")
add_custom_command(
  OUTPUT ${QKDN_DB_MIGRATIONS_CPP}
  COMMAND ${CMAKE_COMMAND} -DOUTPUT=${QKDN_DB_MIGRATIONS_CPP} -DINPUTS=${_qkdn_db_inputs}
          -P ${CMAKE_CURRENT_SOURCE_DIR}/cmake/embed_migrations.cmake
  DEPENDS ${QKDN_DB_MIGRATIONS} ${CMAKE_CURRENT_SOURCE_DIR}/cmake/embed_migrations.cmake
  COMMENT "Embedding SQL migrations"
  VERBATIM)

add_library(qkdn_db STATIC
  src/pg_store.cpp
  src/store_pool.cpp
  src/leader_lease.cpp
  ${QKDN_DB_MIGRATIONS_CPP}
)
target_include_directories(qkdn_db PUBLIC include)
target_link_libraries(qkdn_db PUBLIC qkdn_core Threads::Threads PRIVATE PkgConfig::PQXX qkdn_options)
