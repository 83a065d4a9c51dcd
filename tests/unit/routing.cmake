# Unit tests of key-aware routing (controller/core/routing.cpp, yen.cpp). Pure and deterministic:
# hand-made graphs, seeded random graphs and the shipped topologies (read with the southbound
# topology reader).
add_executable(unit_routing
  ${CMAKE_CURRENT_LIST_DIR}/routing_cost_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/routing_paths_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/routing_yen_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/routing_trust_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/routing_filling_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/routing_weight_test.cpp
)
target_link_libraries(unit_routing PRIVATE qkdn_core qkdn_southbound GTest::gtest_main qkdn_options)
target_compile_definitions(unit_routing PRIVATE QKDN_TOPOLOGY_DIR="${QKDN_TOPOLOGY_DIR}")
gtest_discover_tests(unit_routing PROPERTIES LABELS unit)
