# Unit tests of base/ (the logger, the argument parser, the JSON reader). Pure: fixed time points, a capturing
# sink, temporary config files.
add_executable(unit_base
  ${CMAKE_CURRENT_LIST_DIR}/base_args_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/base_json_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/base_log_test.cpp
)
target_link_libraries(unit_base PRIVATE qkdn_base qkdn_json Boost::json GTest::gtest_main qkdn_options)
gtest_discover_tests(unit_base PROPERTIES LABELS unit)
