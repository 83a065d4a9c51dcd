# Unit tests of key-aware routing (controller/core/routing.cpp, yen.cpp). Pure and deterministic:
# hand-made graphs and seeded random graphs.
add_executable(unit_routing
  ${CMAKE_CURRENT_LIST_DIR}/routing_cost_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/routing_paths_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/routing_yen_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/routing_trust_test.cpp
)
target_link_libraries(unit_routing PRIVATE qkdn_core GTest::gtest_main qkdn_options)
gtest_discover_tests(unit_routing PROPERTIES LABELS unit)
