# Unit tests of the rerouting policy engine (controller/core/rerouting*.cpp). Pure and
# deterministic: hand-made live networks, ManualClock, SeededRandom.
add_executable(unit_rerouting
  ${CMAKE_CURRENT_LIST_DIR}/rerouting_config_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/rerouting_modes_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/rerouting_triggers_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/rerouting_trust_test.cpp
)
target_link_libraries(unit_rerouting PRIVATE qkdn_core GTest::gtest_main qkdn_options)
gtest_discover_tests(unit_rerouting PROPERTIES LABELS unit)
