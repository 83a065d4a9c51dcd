# Unit tests of the controller core model (controller/core: error, clock, topology, network,
# alarms, the in-memory store). Pure: no I/O, injected clock and randomness.
add_executable(unit_core
  ${CMAKE_CURRENT_LIST_DIR}/core_error_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/core_clock_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/core_topology_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/core_network_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/core_alarms_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/core_memory_store_test.cpp
)
target_link_libraries(unit_core PRIVATE qkdn_core GTest::gtest_main qkdn_options)
gtest_discover_tests(unit_core PROPERTIES LABELS unit)
