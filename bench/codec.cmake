# Ck codec throughput: encode and decode+validate frames/s for representative messages.
add_executable(bench_ck_codec ck_codec_bench.cpp)
target_include_directories(bench_ck_codec PRIVATE ${CMAKE_SOURCE_DIR}/tests/unit)
target_link_libraries(bench_ck_codec PRIVATE qkdn_southbound benchmark::benchmark qkdn_options)
