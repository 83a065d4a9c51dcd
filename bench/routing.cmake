# Routing performance: route computation latency against plain Boost Dijkstra (bench_routing,
# Google Benchmark) and a demand-replay simulation of blocking per metric (bench_demand_replay).
add_executable(bench_routing ${CMAKE_CURRENT_LIST_DIR}/routing_bench.cpp)
target_link_libraries(bench_routing PRIVATE qkdn_core qkdn_southbound benchmark::benchmark
                                            qkdn_options)
target_compile_definitions(bench_routing PRIVATE
                           QKDN_TOPOLOGY_DIR="${CMAKE_SOURCE_DIR}/tests/data/topologies")

add_executable(bench_demand_replay ${CMAKE_CURRENT_LIST_DIR}/demand_replay.cpp)
target_link_libraries(bench_demand_replay PRIVATE qkdn_core qkdn_southbound qkdn_options)
target_compile_definitions(bench_demand_replay PRIVATE
                           QKDN_TOPOLOGY_DIR="${CMAKE_SOURCE_DIR}/tests/data/topologies")
