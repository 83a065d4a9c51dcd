# qkdnctl: the operator CLI over the northbound REST API. One translation unit on purpose (CI has
# two cores); it depends on Boost (Beast, Asio, JSON), OpenSSL and base/ (the shared argument
# parser and error type) only, never on the controller.
add_executable(qkdnctl ${CMAKE_CURRENT_LIST_DIR}/qkdnctl.cpp)
target_link_libraries(qkdnctl PRIVATE qkdn_base Boost::headers Boost::json OpenSSL::SSL
                                      OpenSSL::Crypto Threads::Threads qkdn_options)
