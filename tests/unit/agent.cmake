# Unit tests of the agent's pure code (southbound/agent/key_store.cpp). No I/O, no sleeps:
# time points are injected, key IDs and bytes come from fixed seeds.
add_executable(unit_agent_key_store
  ${CMAKE_CURRENT_LIST_DIR}/agent_key_store_test.cpp
)
target_link_libraries(unit_agent_key_store PRIVATE qkdn_agent GTest::gtest_main qkdn_options)
gtest_discover_tests(unit_agent_key_store TEST_PREFIX "unit_agent_key_store." PROPERTIES LABELS unit)
