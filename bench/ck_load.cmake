# Ck load driver: heartbeat round trips against the controller service (docs/PERFORMANCE.md,
# bench/run-all.sh).
add_executable(bench_ck_roundtrip ${CMAKE_CURRENT_LIST_DIR}/ck_roundtrip.cpp)
target_link_libraries(bench_ck_roundtrip PRIVATE qkdn_service qkdn_options)
